-- wrk script: POST /api/waiting-room/sessions/{id}:heartbeat for ids read from $IDS_FILE, at random.
local ids = {}
function init(args)
  local path = os.getenv("IDS_FILE")
  for line in io.lines(path) do ids[#ids + 1] = line end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
function request()
  return wrk.format("POST", "/api/waiting-room/sessions/" .. ids[math.random(#ids)] .. ":heartbeat")
end
