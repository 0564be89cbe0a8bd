"""The OpenAI Batch API path: the same requests as files of JSONL lines, at half the price.

Its modules depend on each other in one direction only (no import circle, deferred or
not), each on those after it:

    path       BatchAPIAdapter, whose items are lines of the Batch API stage
    collect    CollectingAdapter: a synchronous rerun that collects a journal's batches
    jobs       BatchStage, a grouped stage; BatchJobs, its group: lines into files, files
               into batches, outcomes emitted
    fallback   with a deadline, the switch to the synchronous path in time for it; Resender,
               what sends lines synchronously
    submitter  uploads and creates, within the enqueued tokens and creations per hour
    answers    each batch polled to its end, its lines judged and joined back
    context    BatchContext: the request, options, key limits, result rendering
    options    BatchAPI: the user's options
    wire       the Files and Batch API calls
    spool      the lines on disk (their format) and the items in memory
"""

from .collect import CollectingAdapter, check_rerun
from .context import BatchContext
from .jobs import BatchStage
from .options import BatchAPI
from .path import BatchAPIAdapter

__all__ = [
    "BatchAPI",
    "BatchAPIAdapter",
    "BatchContext",
    "BatchStage",
    "CollectingAdapter",
    "check_rerun",
]
