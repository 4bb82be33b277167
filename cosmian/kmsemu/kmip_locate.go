package kmsemu

import (
	"cmp"
	"slices"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// ---- Locate (core/operations/locate.rs, server_database stores/sql/locate_query.rs) ----

func (s *Server) opLocate(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	an, kerr := reqChild(req, "Attributes", ttlv.Structure)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	a, kerr := s.parseAttrs(an)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	limit := maxLocateItems
	if c, ok, kerr := optChild(req, "MaximumItems", ttlv.Integer); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		limit = min(max(int(c.Int), 0), maxLocateItems)
	}
	// OffsetItems is accepted and ignored: Cosmian 5.26 never reads it.
	if _, _, kerr := optChild(req, "OffsetItems", ttlv.Integer); kerr != nil {
		return ttlv.Node{}, kerr
	}
	type hit struct {
		uid string
		seq int64
	}
	var found []hit
	s.scan("", func(o *object) {
		if o.owner != user && s.st.perms[o.uid][user] == 0 { // explicit grants only, not "*"
			return
		}
		if a.tags != nil && !o.hasTags(a.tags) {
			return
		}
		if a.objectType != "" && a.objectType != "SymmetricKey" {
			return
		}
		if a.alg != "" && a.alg != "AES" {
			return
		}
		if a.length != nil && *a.length != o.length {
			return
		}
		if a.keyFormat != "" && a.keyFormat != o.keyFormat {
			return
		}
		if a.uid != "" && a.uid != o.uid {
			return
		}
		if a.state != "" {
			if o.state != a.state {
				return
			}
		} else if o.destroyed() {
			return
		}
		found = append(found, hit{o.uid, o.seq})
	})
	// Sorted and rendered outside the lock (scan holds it a chunk at a time).
	slices.SortFunc(found, func(x, y hit) int { return cmp.Compare(x.seq, y.seq) })
	if len(found) > limit {
		found = found[:limit]
	}
	out := []ttlv.Node{ttlv.Int("LocatedItems", int32(len(found)))}
	for _, o := range found {
		out = append(out, ttlv.Text("UniqueIdentifier", o.uid))
	}
	return ttlv.Struct("LocateResponse", out...), nil
}
