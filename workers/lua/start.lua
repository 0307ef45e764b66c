-- A job starts.  KEYS: job hash; ARGV: now, retention.
--@include start_fn.lua
return start(KEYS[1], ARGV[1], ARGV[2])
