"""A 2-process Lightning DDP run on the CPU (gloo) for tests/test_lightning.py.

Run as a script: ``python tests/lightning_ddp.py OUT_DIR``. Lightning's DDP launcher starts
the second process by running this script again; each rank writes ``OUT_DIR/rank{r}.json``
with the ``T`` the callback set, the schedule step ``k`` each optimizer step applied, the
momenta it logged, the warnings that mention ``total_steps`` and a checksum of its
parameters (equal on both ranks under DDP).

72 samples in batches of 4 on 2 processes: 9 batches per process and epoch; with
accumulate_grad_batches=4 that is ceil(9 / 4) = 3 optimizer steps per epoch, T = 6 over 2
epochs.
"""

from __future__ import annotations

import json
import pathlib
import sys
import warnings

import lightning.pytorch as pl
import torch

from demon_optim import DemonAdam
from demon_optim.integrations.lightning import DemonCallback

SAMPLES, BATCH, ACCUMULATE, EPOCHS, DEVICES = 72, 4, 4, 2, 2


class Recorded(pl.LightningModule):
    """A linear model whose optimizer records the step k it applied at every step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(3, 1)
        self.steps: list[int] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = DemonAdam(self.parameters(), lr=1e-2)
        optimizer.register_step_post_hook(
            lambda opt, *_: self.steps.append(opt.param_groups[0]["schedule_step"] - 1)
        )
        return optimizer


def main(out: pathlib.Path) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 3, generator=gen)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH)
    model, callback = Recorded(), DemonCallback()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=DEVICES,
        strategy="ddp",
        max_epochs=EPOCHS,
        accumulate_grad_batches=ACCUMULATE,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, loader)
    result = {
        "world_size": trainer.world_size,
        "batches_per_epoch": trainer.num_training_batches,
        "total_steps": callback.total_steps,
        "steps": model.steps,
        "last_momentum": callback.momentum["momentum"],
        "warnings": [str(w.message) for w in caught if "total_steps" in str(w.message)],
        "checksum": sum(float(p.detach().double().sum()) for p in model.parameters()),
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
