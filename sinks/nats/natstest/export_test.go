package natstest

// StoreDir returns the directory of s's JetStream store.
func StoreDir(s *Server) string { return s.dir }
