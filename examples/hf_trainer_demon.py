"""Demon Adam under the Hugging Face Trainer, with the Trainer's own LR schedule.

The run's length is given in epochs (with gradient accumulation), so T, the number of
optimizer steps, is known only to the Trainer: DemonCallback hands it to the optimizer when
training starts, and the Trainer's linear warm-up and decay use the same T. The momentum is
logged beside the learning rate; a run resumed from a checkpoint continues the schedule.

    pip install 'demon-optim[transformers]'
    python examples/hf_trainer_demon.py [output_dir]
"""

from __future__ import annotations

import sys
import tempfile

import torch
from transformers import Trainer, TrainingArguments

from demon_optim import DemonAdam
from demon_optim.integrations.transformers import DemonCallback


class Regressor(torch.nn.Module):
    """Any nn.Module whose forward returns a dict holding the loss trains under the Trainer."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 1)
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        prediction = self.net(x).squeeze(-1)
        return {"loss": torch.nn.functional.mse_loss(prediction, labels), "logits": prediction}


class NoisySine(torch.utils.data.Dataset):
    """y = sin(w . x) + noise: 250 examples, so an epoch's last batch is short."""

    def __init__(self, n: int = 250) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=generator)
        w = torch.randn(8, generator=generator)
        self.y = torch.sin(self.x @ w) + 0.05 * torch.randn(n, generator=generator)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def main(output_dir: str) -> Trainer:
    torch.manual_seed(0)
    model = Regressor()
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=8,
        per_device_train_batch_size=16,  # 16 batches an epoch (the last one of 10) ...
        gradient_accumulation_steps=3,  # ... 6 optimizer steps an epoch: T = 48
        learning_rate=1e-2,
        lr_scheduler_type="linear",  # the Trainer's schedule, over the same T
        warmup_steps=2,
        logging_steps=8,
        save_strategy="steps",
        save_steps=24,  # resume with trainer.train(resume_from_checkpoint=True)
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    # total_steps is left out: DemonCallback sets it to the Trainer's max_steps
    optimizer = DemonAdam(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.999))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=NoisySine(),
        optimizers=(optimizer, None),  # None: the Trainer builds its LR scheduler
        callbacks=[DemonCallback()],
    )
    trainer.train()
    print(f"T = {trainer.state.max_steps} optimizer steps")
    for entry in trainer.state.log_history:
        if "momentum" in entry:
            print(
                f"step {entry['step']:3d}  loss {entry['loss']:.4f}  "
                f"lr {entry['learning_rate']:.2e}  momentum {entry['momentum']:.4f}"
            )
    return trainer


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="hf-demon-"))
