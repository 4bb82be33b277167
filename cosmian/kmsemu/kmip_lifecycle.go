package kmsemu

import (
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// ---- Revoke (core/operations/revoke.rs) ----

func (s *Server) opRevoke(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	uid, kerr := uidOf(req)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	rr, kerr := reqChild(req, "RevocationReason", ttlv.Structure)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	code, kerr := reqChild(rr, "RevocationReasonCode", ttlv.Enumeration)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	var cdate *time.Time
	if c, ok, kerr := optChild(req, "CompromiseOccurrenceDate", ttlv.DateTime); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		t := c.Time.UTC()
		cdate = &t
	}
	compromise := code.Str == "KeyCompromise" || code.Str == "CACompromise"
	now := s.now()
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	cands, kerr := s.candidates(uid)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	count := 0
	for _, o := range cands {
		switch o.state {
		case stateActive, statePreActive:
		case stateDestroyed, stateDestroyedCompromised:
			count++
			continue
		case stateDeactivated:
			if !compromise {
				count++
				continue
			}
		case stateCompromised:
			continue
		}
		if !s.userCanPerform(user, o, opRevoke) {
			continue
		}
		count++
		s.revokeLocked(o, code.Str, cdate, now)
	}
	if count == 0 {
		return ttlv.Node{}, kmipErr("Item_Not_Found", uid)
	}
	return ttlv.Struct("RevokeResponse", ttlv.Text("UniqueIdentifier", uid)), nil
}

// ---- Destroy (core/operations/destroy.rs) ----

func (s *Server) opDestroy(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	uid, kerr := uidOf(req)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	remove := false
	if c, ok, kerr := optChild(req, "Remove", ttlv.Boolean); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		remove = c.Bool
	}
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	cands, kerr := s.candidates(uid)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	count := 0
	for _, o := range cands {
		if !s.userCanPerform(user, o, opDestroy) || o.destroyed() {
			continue
		}
		// The stored state decides, not the time-derived one.
		if o.state == stateActive && o.activation != nil {
			return ttlv.Node{}, kmipErr("Wrong_Key_Lifecycle_State", "DENIED")
		}
		count++
		if remove {
			if o.state == stateActive {
				return ttlv.Node{}, invalidErr("Object with unique identifier: " + o.uid + " is active. It must be revoked first")
			}
			clear(o.material)
			delete(s.st.objects, o.uid)
			delete(s.st.perms, o.uid)
			continue
		}
		if o.state == stateCompromised {
			o.state = stateDestroyedCompromised
		} else {
			o.state = stateDestroyed
		}
		clear(o.material)
		o.material, o.wrapped = nil, false
	}
	if count == 0 {
		return ttlv.Node{}, kmipErr("Item_Not_Found", uid)
	}
	return ttlv.Struct("DestroyResponse", ttlv.Text("UniqueIdentifier", uid)), nil
}
