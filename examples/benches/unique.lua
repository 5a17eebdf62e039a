-- Every request a new URL: wrk's path plus a counter (wrk -t1, so the counter is unique).
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", wrk.path .. "-" .. n)
end
