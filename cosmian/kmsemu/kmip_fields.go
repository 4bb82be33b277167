package kmsemu

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// ---- request field helpers (type errors are serde Codec_Error, as from_ttlv reports them) ----

func optChild(n ttlv.Node, tag string, typ ttlv.Type) (ttlv.Node, bool, *kmsError) {
	c, ok := n.Child(tag)
	if !ok {
		return ttlv.Node{}, false, nil
	}
	if c.Type != typ {
		return ttlv.Node{}, false, codecErr(fmt.Sprintf("invalid type for `%s`: expected %s, found %s", tag, typ, c.Type))
	}
	return c, true, nil
}

func reqChild(n ttlv.Node, tag string, typ ttlv.Type) (ttlv.Node, *kmsError) {
	c, ok, kerr := optChild(n, tag, typ)
	if kerr != nil {
		return c, kerr
	}
	if !ok {
		return c, codecErr("missing field `" + tag + "`")
	}
	return c, nil
}

// uidOf reads the UniqueIdentifier of an operation; absent means an ID placeholder.
func uidOf(n ttlv.Node) (string, *kmsError) {
	c, ok, kerr := optChild(n, "UniqueIdentifier", ttlv.TextString)
	if kerr != nil {
		return "", kerr
	}
	if !ok {
		return "", errPlaceholder
	}
	return c.Str, nil
}

// reqAttrs holds the request attributes the emulator understands.
type reqAttrs struct {
	alg, keyFormat, objectType, state, uid   string
	length, mask                             *int32
	activation, compromise                   *time.Time
	sensitive, extractable, neverExtractable *bool
	tags                                     []string // nil: no tag attribute
}

func (s *Server) parseAttrs(n ttlv.Node) (reqAttrs, *kmsError) {
	var a reqAttrs
	for _, c := range n.Children {
		switch c.Tag {
		case "CryptographicAlgorithm", "KeyFormatType", "ObjectType", "State":
			if c.Type != ttlv.Enumeration {
				return a, codecErr("invalid type for `" + c.Tag + "`")
			}
			switch c.Tag {
			case "CryptographicAlgorithm":
				a.alg = c.Str
			case "KeyFormatType":
				a.keyFormat = c.Str
			case "ObjectType":
				a.objectType = c.Str
			case "State":
				a.state = c.Str
			}
		case "CryptographicLength", "CryptographicUsageMask":
			if c.Type != ttlv.Integer {
				return a, codecErr("invalid type for `" + c.Tag + "`")
			}
			v := int32(c.Int)
			if c.Tag == "CryptographicLength" {
				a.length = &v
			} else {
				a.mask = &v
			}
		case "ActivationDate", "CompromiseOccurrenceDate":
			if c.Type != ttlv.DateTime {
				return a, codecErr("invalid type for `" + c.Tag + "`")
			}
			t := c.Time.UTC()
			if c.Tag == "ActivationDate" {
				a.activation = &t
			} else {
				a.compromise = &t
			}
		case "Sensitive", "Extractable", "NeverExtractable":
			if c.Type != ttlv.Boolean {
				return a, codecErr("invalid type for `" + c.Tag + "`")
			}
			v := c.Bool
			switch c.Tag {
			case "Sensitive":
				a.sensitive = &v
			case "Extractable":
				a.extractable = &v
			default:
				a.neverExtractable = &v
			}
		case "UniqueIdentifier":
			if c.Type != ttlv.TextString {
				return a, codecErr("invalid type for `UniqueIdentifier`")
			}
			a.uid = c.Str
		case "Attribute":
			vid, _ := c.Child("VendorIdentification")
			name, _ := c.Child("AttributeName")
			val, ok := c.Child("AttributeValue")
			if vid.Str == s.cfg.VendorID && name.Str == "tag" && ok {
				var tags []string
				if val.Type == ttlv.TextString {
					if err := json.Unmarshal([]byte(val.Str), &tags); err != nil {
						tags = nil
					}
				}
				if tags == nil {
					tags = []string{}
				}
				a.tags = tags
			}
		}
	}
	return a, nil
}

func (s *Server) newUUID() (string, error) {
	b, err := s.randBytes(16)
	if err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
