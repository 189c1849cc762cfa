-- GET …/sessions/{id}, with If-None-Match "1" (304) or without (200), over fresh sessions.
-- wrk -t C -c C -s get.lua URL -- SESSIONS_FILE etag|plain [PATH_PREFIX]
function init(args)
  sessions, index, etag, prefix = {}, 0, args[2] == "etag", args[3] or "/v1"
  for line in io.lines(args[1]) do table.insert(sessions, line) end
end

function request()
  index = index % #sessions + 1
  local session_id, token = sessions[index]:match("(%S+) (%S+)")
  local headers = { ["Authorization"] = "Bearer " .. token }
  if etag then headers["If-None-Match"] = '"1"' end
  return wrk.format("GET", prefix .. "/orgs/bench/sessions/" .. session_id, headers)
end

-- Prints the JSON line bench/run.py reads (report.lua, beside this script).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
