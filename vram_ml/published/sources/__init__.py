"""The published sources: one parser module per source, and how each is read.

Two kinds, as their notes describe:

- `lines` sources (fms-acceleration CSVs, peft MetaMathQA results, peft docs): every version of a
  file is parsed; a published line that appears again unchanged in a later version is one
  measurement (kept at its earliest commit, later places in `also_in`).
- `documents` sources (READMEs): each distinct version of a document is parsed; one published
  (row, value, outcome) is kept at the source's pinned commit when still published there (else
  a preferred or its first commit), re-read with that commit's code and configs.

Each parser module has `parse(text, *, repository, path, commit, commit_date, context)` and a
context builder reading the same commit's scripts and configs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from vram_ml.published.sources import (
    axolotl,
    chatglm3,
    cogvlm2,
    fms_acceleration,
    fms_context,
    fms_versions,
    fsdp_qlora,
    glm4,
    hf_blog_4bit,
    minicpm,
    minicpm_v,
    peft_docs,
    peft_metamathqa,
    peft_versions,
    qwen,
    qwen_vl,
    universal_llm_trainer,
)


@dataclass(frozen=True)
class PublishedSource:
    name: str
    repository: str
    parser: ModuleType
    kind: Literal["lines", "documents"]
    # lines sources: list their versions from history / build one version's context
    list_versions: Callable[..., dict[str, Any]] | None = None
    context: Callable[..., dict[str, Any]] | None = None
    targets: tuple[dict[str, Any], ...] = ()
    pinned: str | None = None
    prefer: tuple[str, ...] = ()
    carried: bool = False  # read from the quoted lines in datasets/published/quoted/ if absent
    run_diff_keys: tuple[str, ...] = field(default_factory=tuple)


def _document_source(module: ModuleType, carried: bool = False) -> PublishedSource:
    targets = tuple(module.TARGETS)
    return PublishedSource(
        name=module.SOURCE, repository=module.REPOSITORY, parser=module, kind="documents",
        targets=targets, pinned=targets[0]["commit"], prefer=tuple(targets[0].get("prefer", ())),
        carried=carried, run_diff_keys=tuple(getattr(module, "RUN_DIFF_KEYS", ())))


SOURCES: tuple[PublishedSource, ...] = (
    PublishedSource("fms-acceleration", fms_acceleration.REPOSITORY, fms_acceleration, "lines",
                    list_versions=fms_versions.list_versions, context=fms_context.build_context),
    PublishedSource("peft-metamathqa", peft_metamathqa.REPOSITORY, peft_metamathqa, "lines",
                    list_versions=peft_versions.list_result_versions,
                    context=peft_metamathqa.build_context),
    PublishedSource("peft-docs", peft_docs.REPOSITORY, peft_docs, "lines",
                    list_versions=peft_versions.list_doc_versions, context=peft_docs.build_context),
    *(_document_source(module) for module in (
        qwen, qwen_vl, minicpm_v, universal_llm_trainer, fsdp_qlora, axolotl, chatglm3, glm4,
        cogvlm2, minicpm)),
    _document_source(hf_blog_4bit, carried=True),
)
SOURCE_NAMES = tuple(source.name for source in SOURCES)


def source_named(name: str) -> PublishedSource:
    return next(source for source in SOURCES if source.name == name)
