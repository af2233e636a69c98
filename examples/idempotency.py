"""Idempotency (guide: "Task Design Patterns / 1. Idempotency").

Two layers: the task itself checks whether its work is already done (the guide's pattern),
and ``apply_async(idempotency_key=...)`` keeps a duplicate call from being enqueued at all.

    python examples/idempotency.py
"""

from __future__ import annotations

import threading

from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor

local_executor = get_local_executor(max_workers=4)
configure_background_tasks(local_executor)

# A stand-in profile store.
profiles: dict[int, dict] = {}
applied = 0
lock = threading.Lock()


def is_profile_updated(user_id: int, profile_data: dict) -> bool:
    with lock:
        current = profiles.get(user_id, {})
        return all(current.get(k) == v for k, v in profile_data.items())


def apply_profile_update(user_id: int, profile_data: dict) -> dict:
    global applied
    with lock:
        profiles.setdefault(user_id, {}).update(profile_data)
        applied += 1
    return {"status": "updated"}


# -- the guide's task -----------------------------------------------------------------------
@background
def update_user_profile(user_id: int, profile_data: dict):
    # Check if update was already applied
    if is_profile_updated(user_id, profile_data):
        return {"status": "already_updated"}

    # Apply update
    result = apply_profile_update(user_id, profile_data)
    return result


def main() -> None:
    first = update_user_profile.delay(7, {"name": "Ada"}).result_sync(timeout=10)
    again = update_user_profile.delay(7, {"name": "Ada"}).result_sync(timeout=10)
    print(f"first run: {first['status']}")
    print(f"same update again: {again['status']}")

    # An idempotency key: the second call enqueues nothing and returns the first handle.
    h1 = update_user_profile.apply_async((8, {"name": "Grace"}), idempotency_key="profile-8-v1")
    h2 = update_user_profile.apply_async((8, {"name": "Grace"}), idempotency_key="profile-8-v1")
    print(f"same idempotency key, same task id: {h1.id == h2.id}")
    print(f"result: {h2.result_sync(timeout=10)['status']}")
    print(f"updates applied in total: {applied}")


if __name__ == "__main__":
    main()
