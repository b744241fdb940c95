-- The many-session workload (bench/run.py): `wrk ... -s wrk_many.lua URL -- COOKIES THREADS`.
-- COOKIES has one Cookie header value per line, one session each (an empty line sends no
-- Cookie: the no-session app); each request takes the next line in turn, so every session
-- gets one request per pass. Thread k of THREADS starts at k/THREADS of the file, so two
-- threads are never on one session at once. Prints wrk_report.lua's JSON line at the end.

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "wrk_report.lua")

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local requests = {}
local index = 0

function init(args)
  for line in io.lines(args[1]) do
    if line == "" then
      table.insert(requests, wrk.format())
    else
      table.insert(requests, wrk.format(nil, nil, {["Host"] = wrk.headers["Host"], ["Cookie"] = line}))
    end
  end
  assert(#requests > 0, "no cookies in " .. args[1])
  index = math.floor(#requests * id / (tonumber(args[2]) or 1))
end

function request()
  index = index % #requests + 1
  return requests[index]
end
