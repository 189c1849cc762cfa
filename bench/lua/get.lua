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

function done(summary, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "non_2xx": %d, "errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
