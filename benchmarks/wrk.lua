-- wrk script for the soapreceptor benchmark: every request a different, validly signed Notify.
--
-- MTurk signs only the Timestamp, so one signed template per run serves for
-- any number of messages: each request puts a serial number, unique across
-- wrk's threads, into the template's ids. The receptors must therefore store
-- (and soapreceptor hand on) every event as new, as with real traffic.
--
--   [WRK_RATE=R] wrk -t THREADS -s benchmarks/wrk.lua URL -- TEMPLATE_FILE FIRST_SERIAL THREADS
--
-- TEMPLATE_FILE holds the body with the marker @@@@@@@@@@@@ (12 characters,
-- replaced by a 12-digit serial, so every body has the template's length).
-- WRK_RATE, if set, paces the load (for latency below the peak): each of
-- wrk's threads sends R requests a second on a fixed schedule, each on
-- whichever of its connections is free when the request is due, so a slow
-- answer does not slow the sender down: as MTurk, which does not wait for one
-- message's answer to send the next. A request that falls behind its time (every
-- connection was waiting for an answer) goes as soon as a connection is free.
-- (An environment variable because wrk decides whether a script paces before
-- init() runs.)
--
-- wrk times a request from when it leaves, not from when it was due: a
-- request held back for want of a free connection does not count its wait
-- (coordinated omission), though MTurk's message would have waited that long
-- for its answer. So a paced run also records how late each request left (in
-- 0.1 ms steps, rounded up), and done() gives the top percentiles of that
-- lateness beside wrk's of the latency: a message's time from due to answer
-- is the two added (benchmarks/load.py bounds its p99). done() prints one
-- JSON line.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local rate = tonumber(os.getenv("WRK_RATE") or "0")
-- Globals, not locals: done() reads sent and refused through thread:get().
parts, serial, step, sent, refused = nil, 0, 1, 0, 0
-- Paced: how many answered requests left how late, by lateness in tenths of a millisecond (0: on time).
late = {}
local headers = {
   ["Content-Type"] = "text/xml; charset=utf-8",
   ["SOAPAction"] = '""',
   ["User-Agent"] = "Axis/1.4",
}

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local template = file:read("*a")
   file:close()
   parts = {}
   local start = 1
   while true do
      local i, j = string.find(template, "@@@@@@@@@@@@", start, true)
      if i == nil then break end
      table.insert(parts, string.sub(template, start, i - 1))
      start = j + 1
   end
   table.insert(parts, string.sub(template, start))
   assert(#parts > 1, "the template has no serial marker")
   -- Thread n takes serials first + n, first + n + threads, ...: never the same twice.
   -- (setup() runs in the main Lua state: each thread is told the thread count.)
   step = tonumber(args[3])
   serial = tonumber(args[2]) + id
   sent = 0
   refused = 0
end

-- delay() answers for each request before it is built, in the order their times come: their
-- latenesses, in that order (1 to last; built of them sent). Each is counted when an answer comes,
-- as wrk's latency is, the oldest first (answered of them): those of the requests still unanswered
-- when wrk stops are left out of both alike.
local lateness, built, answered, last = {}, 0, 0, 0

function request()
   local body = table.concat(parts, string.format("%012d", serial))
   serial = serial + step
   sent = sent + 1
   if built < last then
      built = built + 1
   end
   return wrk.format("POST", nil, headers, body)
end

if rate > 0 then
   -- wrk's Lua (LuaJIT) has no millisecond clock of its own: the C library's monotonic one, through ffi.
   local ffi = require("ffi")
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } soapreceptor_timespec;
      int clock_gettime(int clock, soapreceptor_timespec *now);
   ]]
   local CLOCK_MONOTONIC = 1
   local clock = ffi.new("soapreceptor_timespec")
   local function now_ms()
      ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
      return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
   end
   local interval = 1000 / rate
   local due = nil
   -- Called before each request a connection is about to send: how many milliseconds it waits
   -- for the next free time on this thread's schedule (whole ones: wrk's timer takes no less).
   -- The schedule is absolute, so the rounding of one wait does not carry into the next.
   -- A request called for after its time (wait <= 0) leaves at once, late by -wait.
   function delay()
      local now = now_ms()
      due = due or now
      local wait = due - now
      due = due + interval
      -- Rounded up: the percentiles done() gives are never below the true ones.
      last = last + 1
      lateness[last] = wait < 0 and math.ceil(-wait * 10) or 0
      if wait <= 0 then
         return 0
      end
      return math.floor(wait + 0.5)
   end
end

function response(status, response_headers, body)
   if answered < built then
      answered = answered + 1
      local tenths = lateness[answered]
      lateness[answered] = nil
      late[tenths] = (late[tenths] or 0) + 1
   end
   if status ~= 200 then
      refused = refused + 1
   end
end

-- The smallest lateness (microseconds) at or under which p percent of the requests left.
local function percentile(counts, total, p)
   local steps = {}
   for tenths in pairs(counts) do
      table.insert(steps, tenths)
   end
   table.sort(steps)
   local need, seen = total * p / 100, 0
   for _, tenths in ipairs(steps) do
      seen = seen + counts[tenths]
      if seen >= need then
         return tenths * 100
      end
   end
   return 0
end

function done(summary, latency, requests)
   local total_sent, total_refused = 0, 0
   local late_counts, late_total, late_max = {}, 0, 0
   for _, thread in ipairs(threads) do
      total_sent = total_sent + thread:get("sent")
      total_refused = total_refused + thread:get("refused")
      for tenths, count in pairs(thread:get("late")) do
         late_counts[tenths] = (late_counts[tenths] or 0) + count
         late_total = late_total + count
         late_max = math.max(late_max, tenths * 100)
      end
   end
   -- Percentiles 99, 99.05, ..., 100 of the latency and of the lateness: load.due_p99 bounds their sum's p99.
   local tail_latency, tail_late = {}, {}
   for i = 0, 19 do
      local p = 99 + i * 0.05
      table.insert(tail_latency, latency:percentile(p))
      table.insert(tail_late, percentile(late_counts, late_total, p))
   end
   -- The 100th: the largest (wrk's percentile(100) answers 0).
   table.insert(tail_latency, latency.max)
   table.insert(tail_late, late_max)
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "sent": %d, "refused": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "tail": [%s]}, '
         .. '"late_us": {"count": %d, "max": %d, "tail": [%s]}}\n',
      summary.requests, summary.duration, summary.bytes, total_sent, total_refused,
      summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
      summary.errors.timeout, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), table.concat(tail_latency, ", "), late_total, late_max,
      table.concat(tail_late, ", ")))
end
