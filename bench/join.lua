-- wrk script: POST /api/waiting-room/sessions into room $ROOM.
wrk.method = "POST"
wrk.path = "/api/waiting-room/sessions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"roomId":"' .. (os.getenv("ROOM") or "bench") .. '"}'
