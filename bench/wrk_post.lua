-- POST / with a small JSON body (the HTTP scenario's request).
wrk.method = "POST"
wrk.body = '{"user_id": 42, "email": "user@example.com"}'
wrk.headers["Content-Type"] = "application/json"
