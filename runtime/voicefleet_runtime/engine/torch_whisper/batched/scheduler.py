"""Which waiting windows join the batch next: round-robin by request, with a per-request cap.

Each request may hold at most `windows_per_request` windows in the active set while others
wait, and requests take turns, one window each per round, so a two-hour file cannot starve
a five-second request. Slots nobody else wants may go to a request over its cap, except the
last `reserve` ones, which stay free so a newly arrived request joins at the next admission.

While sequences decode, admissions come in groups (`admission_due`): an encoder pass costs
about as much for one window as for eight where launches, not arithmetic, dominate, so a
window may wait up to `wait_s` (a few GPU decode steps; less than one CPU step) for others
to join its pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from voicefleet_runtime.engine.torch_whisper.batched.requests import RequestHandle, WindowJob


def admission_due(
    waiting: int, free: int, decoding: int, since_admission_s: float, batch: int, wait_s: float
) -> bool:
    """Whether the loop admits the waiting windows this turn: at once when nothing decodes,
    else once `batch` wait (or they fill every free slot) or `wait_s` passed since the last."""
    if not waiting or not free:
        return False
    return not decoding or waiting >= min(free, batch) or since_admission_s >= wait_s


class FairQueue:
    def __init__(self, windows_per_request: int, reserve: int) -> None:
        self.windows_per_request = windows_per_request
        self.reserve = reserve
        self._pending: dict[int, deque[WindowJob]] = {}
        self._requests: dict[int, RequestHandle] = {}
        self._turns: deque[int] = deque()

    def add(self, request: RequestHandle) -> None:
        self._requests[request.id] = request
        self._pending[request.id] = deque(request.windows)
        self._turns.append(request.id)

    def requeue(self, job: WindowJob) -> None:
        """A window going back for another try (temperature fallback) is its request's next."""
        pending = self._pending.get(job.request.id)
        if pending is not None:
            pending.appendleft(job)

    def forget(self, request: RequestHandle) -> int:
        """Drop a request's waiting windows (cancelled or finished); returns how many."""
        pending = self._pending.pop(request.id, deque())
        self._requests.pop(request.id, None)
        if request.id in self._turns:
            self._turns.remove(request.id)
        return len(pending)

    def requests(self) -> list[RequestHandle]:
        return list(self._requests.values())

    @property
    def waiting_windows(self) -> int:
        return sum(len(pending) for pending in self._pending.values())

    def waiting_requests(self, active: Callable[[int], int]) -> int:
        """Requests with windows waiting and none in the active set."""
        return sum(1 for rid, pending in self._pending.items() if pending and not active(rid))

    def _eligible(self, request_id: int) -> bool:
        pending = self._pending[request_id]
        if not pending:
            return False
        # Until its first window has detected the language, a request's others wait.
        request = self._requests[request_id]
        return pending[0].index == 0 or request.language is not None

    def take(self, free_slots: int, active: Callable[[int], int]) -> list[WindowJob]:
        """Windows for up to `free_slots` slots; `active(request_id)` counts its active rows."""
        taken: list[WindowJob] = []
        held = {rid: active(rid) for rid in self._turns}

        def one_round(capped: bool, floor: int) -> bool:
            nonlocal free_slots
            progressed = False
            for _ in range(len(self._turns)):
                if free_slots <= floor:
                    break
                rid = self._turns[0]
                self._turns.rotate(-1)
                if not self._eligible(rid):
                    continue
                if capped and held[rid] >= self.windows_per_request:
                    continue
                taken.append(self._pending[rid].popleft())
                held[rid] += 1
                free_slots -= 1
                progressed = True
            return progressed

        while free_slots > 0 and one_round(capped=True, floor=0):
            pass
        while free_slots > self.reserve and one_round(capped=False, floor=self.reserve):
            pass
        return taken
