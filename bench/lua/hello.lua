-- GET /bench/hello: the bare JSON endpoint every GET is compared with.

-- Prints the JSON line bench/run.py reads (report.lua, beside this script).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")
