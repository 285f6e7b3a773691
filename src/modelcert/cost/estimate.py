"""What one certification will cost, estimated before it runs. Pure.

A budget has to be checked before the money is spent: once a test's call is answered it
is paid for. So the budget check (`cost.budget`) asks what the planned calls will cost:

- from this deployment's recent runs when there are some (`RunUsage`: the tokens they
  used and the calls they made): the median tokens per call, times the calls planned,
  at today's price. Tokens, not the dollars those runs cost, so that a price changed
  since is applied; the median, so that one run of retries or a truncated answer does
  not move the figure.
- otherwise from a typical battery call: `TYPICAL_INPUT_TOKENS` in, `TYPICAL_OUTPUT_TOKENS`
  out. The battery's prompts are a sentence (the sim counts 1-21 input and 1-15 output
  tokens per test, 66 and 67 over its 10 answered tests); a real model adds its chat
  template to each prompt and answers more freely, up to the battery's `max_tokens`
  (100 for the parameters test). 40 in and 80 out per call is above both: an estimate
  that errs high keeps a budget, one that errs low overspends it.

No price, no estimate (None): a deployment without a known price is not held back by a
budget, since nothing it spends can be counted.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# A typical battery call's tokens: one home, the budget check's (`cost.budget`).
from modelcert.cost.budget import TYPICAL_INPUT_TOKENS, TYPICAL_OUTPUT_TOKENS
from modelcert.domain import Price, RunUsage

__all__ = [
    "HISTORY_RUNS",
    "TYPICAL_INPUT_TOKENS",
    "TYPICAL_OUTPUT_TOKENS",
    "RunUsage",
    "estimate_calls",
    "estimate_certification_cost",
]
# How many of a deployment's latest completed runs an estimate learns from.
HISTORY_RUNS = 5


def estimate_calls(test_ids: Sequence[str]) -> int:
    """The calls these planned (not skipped) tests make at least: one each, two for
    `availability` (it calls twice, a gap apart)."""
    return sum(2 if test_id == "availability" else 1 for test_id in test_ids)


def estimate_certification_cost(
    price: Price | None, planned_calls: int, history: Sequence[RunUsage] = ()
) -> float | None:
    """The expected cost in USD of `planned_calls` calls at `price`; None without a price.

    With `history` (the deployment's latest runs, `HISTORY_RUNS` are enough), the median
    tokens per call of those runs; otherwise a typical battery call's."""
    if price is None:
        return None
    calls = max(0, planned_calls)
    usable = [run for run in history if run.calls > 0]
    if usable:
        per_call_in = statistics.median(run.input_tokens / run.calls for run in usable)
        per_call_out = statistics.median(run.output_tokens / run.calls for run in usable)
    else:
        per_call_in, per_call_out = TYPICAL_INPUT_TOKENS, TYPICAL_OUTPUT_TOKENS
    return round(price.cost(round(per_call_in * calls), round(per_call_out * calls), calls), 8)
