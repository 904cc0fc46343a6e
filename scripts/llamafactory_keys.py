"""Print vram_ml/llamafactory_keys.py: every YAML key `llamafactory-cli train` accepts.

The fields of LLaMA-Factory's argument dataclasses (read with `ast` from a checkout, nothing is
imported) and of Seq2SeqTrainingArguments of the installed transformers and of any other
transformers source folders given (LLaMA-Factory 0.9.5 runs on transformers 4.55-5.6, whose
TrainingArguments differ: `pip download --no-deps transformers==4.57.6` and unzip it).

    python scripts/llamafactory_keys.py ~/src/LLaMA-Factory [old/transformers ...] \
        > vram_ml/llamafactory_keys.py   # then put the module docstring back on top
"""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

HPARAMS = ("model_args", "data_args", "finetuning_args", "generating_args", "training_args")


def dataclass_fields(path: Path) -> set[str]:
    fields = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            fields |= {stmt.target.id for stmt in node.body
                       if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                       and not stmt.target.id.startswith("_")}
    return fields


def main(checkout: str, *transformers_dirs: str) -> None:
    import transformers

    hparams = Path(checkout) / "src" / "llamafactory" / "hparams"
    keys = set().union(*(dataclass_fields(hparams / f"{name}.py") for name in HPARAMS))
    for library in (Path(transformers.__file__).parent, *map(Path, transformers_dirs)):
        keys |= dataclass_fields(library / "training_args.py")
        keys |= dataclass_fields(library / "training_args_seq2seq.py")
    body = textwrap.fill(", ".join(f'"{key}"' for key in sorted(keys)), width=96,
                         initial_indent="    ", subsequent_indent="    ")
    print(f"LLAMAFACTORY_KEYS = frozenset({{\n{body}\n}})")


if __name__ == "__main__":
    main(*sys.argv[1:])
