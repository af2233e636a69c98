"""The guide's complete example ("Example Implementation"), runnable as it stands.

    python examples/app.py          # serves http://127.0.0.1:8000

    curl -X POST localhost:8000/users -d '{"name": "Ada"}'
    curl -X POST localhost:8000/uploads -d '{"file_path": "/tmp/report.csv"}'

The guide leaves ``create_user_in_database`` to the reader; a tiny in-memory version is
defined here. Everything else is the guide's code as written.
"""

import itertools
import threading

from pacificpy import PacificPy
from pacificpy.background.decorators import background, configure_background_tasks
from pacificpy.background.local import get_local_executor
from pacificpy.background.monitor import configure_task_monitor

# -- not in the guide: a stand-in for a real database --------------------------------------
_users: dict[int, dict] = {}
_user_ids = itertools.count(1)
_users_lock = threading.Lock()


def create_user_in_database(data: dict) -> int:
    """Store ``data`` as a new user and return its id."""
    with _users_lock:
        user_id = next(_user_ids)
        _users[user_id] = dict(data)
    return user_id


# -- the guide's code ---------------------------------------------------------------------

# Create app
app = PacificPy()

# Configure background tasks
local_executor = get_local_executor(max_workers=4)
configure_background_tasks(local_executor)

# Configure task monitoring
configure_task_monitor()


# Background tasks
@background
def send_welcome_email(user_id: int):
    # Simulate email sending
    import time

    time.sleep(2)
    print(f"Welcome email sent to user {user_id}")
    return {"status": "sent", "user_id": user_id}


@background
def process_user_upload(file_path: str):
    # Simulate file processing
    import time

    time.sleep(5)
    print(f"File processed: {file_path}")
    return {"status": "processed", "file_path": file_path}


# Routes
@app.post("/users")
async def create_user(request):
    data = await request.json()
    user_id = create_user_in_database(data)

    # Send welcome email in background
    await send_welcome_email.delay(user_id)

    return {"user_id": user_id, "message": "User created"}


@app.post("/uploads")
async def upload_file(request):
    data = await request.json()
    file_path = data["file_path"]

    # Process file in background
    await process_user_upload.delay(file_path)

    return {"message": "File upload received"}


if __name__ == "__main__":
    app.run()
