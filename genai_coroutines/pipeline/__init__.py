"""Documents in, structured data out: Datalab OCR streamed into OpenAI extraction.

`ExtractionPipeline(ocr, extraction)` runs every document through two stages, each on
its own as soon as it can: the document is converted by Datalab (`ocr`, a
`DocumentConfig`: a `/convert` by default), and the moment its OCR result arrives its
text is sent to `POST /responses` (`extraction`, a `ResponsesRequest` whose
`response_format` is a JSON schema, or JSON mode; make one with `extraction_request`).
There is no phase barrier: the first extraction is sent while other documents are still
being converted, so the batch takes about as long as its slower stage, not the sum.

It is one batch of the engine's driver (`engine.batch.Driver`) with one adapter,
`PipelineAdapter`. So one batch means:

- both APIs' limits at once: each stage draws on its own key's limiters, shared with
  every other batch on that key; `ocr.max_concurrent_requests` bounds the documents
  being uploaded to Datalab (polls hold no slot) and `extraction.max_concurrent_requests`
  the requests in flight to OpenAI, each with its own semaphore; the driver runs their sum of items.
- each API gets its own key: two HTTP sessions, one sending `X-Api-Key` to Datalab, one
  `Authorization: Bearer` to OpenAI, so neither key ever reaches the other host.
- one journal (kind "pipeline"): an accepted OCR job is journaled before its first poll
  and polled, not uploaded again, by a rerun; a finished OCR is journaled as the item's
  "ocr" stage (`Journal.record_stage`) and its text reused by a rerun, even one whose
  extraction settings changed; each successful extraction request is journaled as a
  stage too (per page with `per_page`); a finished document is answered from the
  journal (`from_journal`). Nothing finished is bought twice.
- one progress bar (documents done and failed, plus `ocred` and `extracted` as each
  stage ends) and one `PipelineSummary`: pages, Datalab cents, tokens, estimated USD,
  retries of both stages, and the total.

With `DatalabExtraction(schemas={...})` as `extraction`, Datalab fills the schemas instead:
each document is converted once (`save_checkpoint`), then one `/extract` per schema reads
its checkpoint, in parallel, each journaled as its own stage (`datalab_stage`).

The modules, one per part: `processor` (`ExtractionPipeline`, `extraction_request`: the
entry points), `path` (`PipelineAdapter`: one document's OCR, its extraction and its row),
`stage` (`ExtractionStage`, what either extraction stage supplies), `responses_stage`
(`ResponsesExtraction`, the OpenAI stage, direct or on the Batch API), `datalab_stage`
(`DatalabExtraction` and its stage), `pages` (an OCR result's text, page by page),
`fields` (an extraction's answer as fields, and `per_page` fields merged), `budget`
(`max_cost_usd` over both stages), `shared` (identical extraction requests sent once, with
`dedupe`), `slots` (the extraction's slot) and `summary` (`PipelineSummary`). This module
re-exports their public names, so callers import from `genai_coroutines.pipeline` (or, for
the entry points, from `genai_coroutines`).
"""

from .datalab_stage import DatalabExtraction
from .fields import merge_fields
from .pages import page_texts
from .path import EXTRACTION_STAGE, KIND, OCR_STAGE, PipelineAdapter, logger
from .processor import ExtractionPipeline, Inputs, extraction_request, in_input_order
from .summary import PipelineSummary

__all__ = [
    "DatalabExtraction",
    "EXTRACTION_STAGE",
    "KIND",
    "OCR_STAGE",
    "ExtractionPipeline",
    "Inputs",
    "PipelineAdapter",
    "PipelineSummary",
    "extraction_request",
    "in_input_order",
    "logger",
    "merge_fields",
    "page_texts",
]
