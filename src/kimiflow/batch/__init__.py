"""Batch runs at the account's limits: a resumable runner for JSONL files (limits from ``kimiflow.limits``).

>>> from kimiflow.batch import BatchOptions, RateLimiter, run_batch, run_batch_sync
>>> limiter = RateLimiter.for_tier(2)                     # for your own AsyncKimi code
>>> summary = await run_batch("in.jsonl", "out.jsonl", options=BatchOptions(tier=2, model="moonshot-v1-8k"))
"""

from kimiflow.batch.inputs import BatchRequest, InputDefaults, InputError, LineProblem, scan_input
from kimiflow.batch.journal import (
    Journal,
    JournalError,
    JournalMismatchError,
    JournalStateError,
    OutputConflictError,
)
from kimiflow.batch.options import BatchOptions
from kimiflow.batch.paths import BatchPaths, PathConflictError
from kimiflow.batch.remote import RemoteBatchError, run_remote
from kimiflow.batch.runner import BatchInputError, run_batch, run_batch_sync
from kimiflow.batch.store import BatchStore, BatchStoreError
from kimiflow.batch.summary import BatchSummary
from kimiflow.limits import RateLimiter, RateLimits, RequestTooLargeError, Slot, request_charge

__all__ = [
    "BatchInputError",
    "BatchOptions",
    "BatchPaths",
    "BatchRequest",
    "BatchStore",
    "BatchStoreError",
    "BatchSummary",
    "InputDefaults",
    "InputError",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "JournalStateError",
    "LineProblem",
    "OutputConflictError",
    "PathConflictError",
    "RateLimiter",
    "RateLimits",
    "RemoteBatchError",
    "RequestTooLargeError",
    "Slot",
    "request_charge",
    "run_batch",
    "run_batch_sync",
    "run_remote",
    "scan_input",
]
