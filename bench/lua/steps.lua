-- POST …/steps: each wrk thread runs one connection and walks its own sessions step by step,
-- so no two requests ever race for the same session.
-- wrk -t C -c C -s steps.lua URL -- SESSIONS_FILE PATH_PREFIX THREADS STEPS
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  prefix, threads, steps = args[2], tonumber(args[3]), tonumber(args[4])
  sessions, current, step, bad = {}, 1, 0, 0
  local index = 0
  for line in io.lines(args[1]) do
    if index % threads == id - 1 then table.insert(sessions, line) end
    index = index + 1
  end
  answers = { '"a"', "42", '"a short honest answer"', "true" }
  -- wrk calls request() once on the first thread to check the script, and sends nothing:
  -- answer that call without taking a step, or that session would miss its first one.
  checked = id ~= 1
end

function request()
  if not checked then
    checked = true
    return wrk.format("GET", "/healthz")
  end
  if step == steps then
    current, step = current + 1, 0
  end
  if sessions[current] == nil then
    -- Out of sessions (a connection walked more steps than it was given): a request that
    -- counts as a failure (404), never a Lua error, which ends wrk and the whole run.
    return wrk.format("GET", "/out-of-sessions")
  end
  local session_id, token = sessions[current]:match("(%S+) (%S+)")
  step = step + 1
  local body = '{"step_id": "phase-1-step-' .. step .. '", "answer": ' .. answers[(step - 1) % 4 + 1] .. "}"
  return wrk.format("POST", prefix .. "/orgs/bench/sessions/" .. session_id .. "/steps", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = session_id .. "-" .. step,
  }, body)
end

-- Prints the JSON line bench/run.py reads (report.lua, beside this script).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
