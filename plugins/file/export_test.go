package file

// SetLockHooks sets the test hooks of s, before Open: busy runs each time s finds the lock held by another
// writer, locked in Write once s holds the lock and its checks passed, before it appends.
func SetLockHooks(s *AtomicSink, busy, locked func()) { s.lockBusy, s.locked = busy, locked }
