"""Run the real `fastcls` command in one process of a distributed run, with test hooks.

    torchrun --standalone --nproc-per-node 2 tests/ddp_harness.py [--dump DIR] [--nan R:E:B]
        [--pause POINT SIGNAL_FILE] FASTCLS_ARGS...

--dump DIR        after training, every rank writes its model's weights to DIR/rank-R.safetensors
--nan R:E:B       rank R's training loss becomes NaN at epoch E, batch B (the other ranks' stay finite)
--crash R:E:B     rank R dies (os._exit(3), as a segfault or the OOM killer would end it) at epoch E, batch B
--pause POINT F   tests/pause_harness.py's pause points, on every rank
Not a test module: the tests start it under torchrun.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _dump_after(folder: Path):
    """Wrap train_run/resume_run so each rank saves the weights it ends with."""
    from safetensors.torch import save_file

    import fastcls.runner

    def wrap(real):
        def run(*args, **kwargs):
            clf, path = real(*args, **kwargs)
            folder.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in clf.model.state_dict().items()}
            save_file(state, str(folder / f"rank-{os.environ['RANK']}.safetensors"))
            return clf, path

        return run

    fastcls.runner.train_run = wrap(fastcls.runner.train_run)
    fastcls.runner.resume_run = wrap(fastcls.runner.resume_run)


def _nan_on(rank: int, epoch: int, batch: int, crash: bool = False):
    """Pass train_run a callback that makes one rank's loss NaN at one batch (or ends that rank there)."""
    import fastcls.runner

    def poison(trainer):
        import torch
        from fastai.callback.core import Callback  # imported late: after the CLI silenced other ranks' warnings

        class PoisonLoss(Callback):
            order = 3  # before the ranks compare their losses (StepTogether, 4)

            def after_loss(self):
                at = len(trainer.history) == epoch - 1 and self.iter == batch - 1
                if self.training and at and int(os.environ["RANK"]) == rank:
                    if crash:
                        os._exit(3)
                    self.learn.loss_grad = self.learn.loss_grad * torch.tensor(float("nan"))

        return PoisonLoss()

    real = fastcls.runner.train_run

    def run(config, reporter=None, stop_after=None, callbacks=()):
        return real(config, reporter, stop_after, [*callbacks, poison])

    fastcls.runner.train_run = run


if __name__ == "__main__":
    args = sys.argv[1:]
    while args and args[0].startswith("--") and args[0] in ("--dump", "--nan", "--crash", "--pause"):
        flag = args.pop(0)
        if flag == "--dump":
            _dump_after(Path(args.pop(0)))
        elif flag in ("--nan", "--crash"):
            _nan_on(*map(int, args.pop(0).split(":")), crash=flag == "--crash")
        else:
            sys.path.insert(0, str(Path(__file__).parent))
            from pause_harness import _install

            point, signal_file = args.pop(0), args.pop(0)
            _install(point, Path(signal_file))
    sys.argv = ["fastcls", *args]
    from fastcls.cli.app import main

    main()
