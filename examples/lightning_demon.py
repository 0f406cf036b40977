"""Demon momentum decay in a PyTorch Lightning run (docs/integrations.md).

DemonAdam is built without total_steps: DemonCallback sets T, the run's number of optimizer
steps, from the trainer when training starts, and logs the momentum of every step.
Run it with `python examples/lightning_demon.py` (pip install "demon-optim[lightning]").
"""

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from demon_optim import DemonAdam
from demon_optim.integrations.lightning import DemonCallback


class Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        # no total_steps: DemonCallback sets it when training starts
        return DemonAdam(self.parameters(), lr=1e-3, betas=(0.9, 0.999))


def main(max_epochs: int = 10) -> pl.Trainer:
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = x.sin().sum(dim=1, keepdim=True)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    demon = DemonCallback()  # sets T; logs "momentum" at Lightning's logging steps
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accumulate_grad_batches=2,  # T counts optimizer steps: 8 per epoch here
        callbacks=[demon],
        logger=pl.loggers.CSVLogger("."),  # ./lightning_logs/version_*/metrics.csv
        log_every_n_steps=1,
        enable_progress_bar=False,
    )
    trainer.fit(Regression(), loader)
    print(
        f"T = {demon.total_steps} optimizer steps; last momentum "
        f"{demon.momentum['momentum']:.3f}, loss {trainer.callback_metrics['loss']:.4f}"
    )
    return trainer


if __name__ == "__main__":
    main()
