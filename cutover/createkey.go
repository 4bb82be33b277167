package cutover

// NoteCreateKeyRefused is the proxy's hook for cosmian.IsXKSCreateKeyRefusal: the key id is recorded as a
// conflict, named in status and blocking the switch, because the backend holds a different,
// non-XKS key under the id AWS asked for. The proxy does not retry such a CreateKey on the
// other backend (that would mint a second key under one id).
func (c *Controller) NoteCreateKeyRefused(keyID, backend, reason string) {
	if validKeyID(keyID) != nil {
		return
	}
	c.log.Warn("cutover: CreateKey refused: a non-XKS key holds this id", "key_id", keyID, "backend", backend)
	switch c.curState() {
	case StateServing, StateRolledBack, StateFinalized:
		return // no migration to block; the log line and AWS's error say it
	}
	c.book.setKey(keyID, KeyProgress{Phase: PhaseCopy, Result: ResultConflict,
		Error: truncate("CreateKey refused on " + backend + ": " + reason)})
}
