package kmsemu

// RevokeAccess removes ops (wire names, as GrantAccess takes) on uid from user, with the
// owner-only rules of POST /access/revoke: what an operator does through the KMS's own API.
func (s *Server) RevokeAccess(owner, uid, user string, ops ...string) error {
	set, err := parseOps(ops)
	if err != nil {
		return err
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if kerr := s.grantLocked(owner, uid, user, set, false); kerr != nil {
		return kerr
	}
	return nil
}
