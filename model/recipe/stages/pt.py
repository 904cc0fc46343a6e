"""`stage: pt` (CustomTrainer, train/pt/trainer.py:92-93): the model's own causal-LM loss, as
sft computes it, on packed blocks: `packing` defaults to on for pt (hparams/parser.py:520), the
pretrain processor cuts the concatenated texts into blocks of exactly cutoff_len tokens
(data/processor/pretrain.py:39-51; cutoff_len - 1 when `packing: true` is written, the YAML
reader's business) and `DataCollatorForLanguageModeling` adds no padding (pt/workflow.py:48):
every batch is B x seq_len (StackRules.padded_seq_len does not round pt)."""

from vram_ml.model.recipe.stages.sft import forward_loss, make_batch, prepare

__all__ = ["forward_loss", "make_batch", "prepare"]
