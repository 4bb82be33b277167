package kmsemu

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// Keys "stored wrapped at rest" are wrapped with a server-internal KEK using AES key wrap with
// padding (RFC 5649), the mode Cosmian uses by default when wrapping with a symmetric key.

var errUnwrap = errors.New("kmsemu: key unwrap failed")

// kwpWrap is RFC 5649 §4.1.
func kwpWrap(kek, plain []byte) ([]byte, error) {
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	padded := make([]byte, (len(plain)+7)/8*8)
	copy(padded, plain)
	defer clear(padded)
	var aiv [8]byte
	binary.BigEndian.PutUint32(aiv[:4], 0xA65959A6)
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(plain)))
	n := len(padded) / 8
	out := make([]byte, 8+len(padded))
	var b [16]byte
	if n == 1 {
		copy(b[:8], aiv[:])
		copy(b[8:], padded)
		block.Encrypt(out, b[:])
		return out, nil
	}
	a := aiv
	copy(out[8:], padded)
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], a[:])
			copy(b[8:], out[8*i:8*i+8])
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(b[:8])^t)
			copy(out[8*i:], b[8:])
		}
	}
	copy(out[:8], a[:])
	return out, nil
}

// kwpUnwrap is RFC 5649 §4.2.
func kwpUnwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return nil, errUnwrap
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(wrapped)/8 - 1
	var a [8]byte
	out := make([]byte, 8*n)
	var b [16]byte
	if n == 1 {
		block.Decrypt(b[:], wrapped)
		copy(a[:], b[:8])
		copy(out, b[8:])
	} else {
		copy(a[:], wrapped[:8])
		copy(out, wrapped[8:])
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				t := uint64(n*j + i)
				binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(a[:])^t)
				copy(b[8:], out[8*(i-1):8*i])
				block.Decrypt(b[:], b[:])
				copy(a[:], b[:8])
				copy(out[8*(i-1):], b[8:])
			}
		}
	}
	clear(b[:])
	mli := int(binary.BigEndian.Uint32(a[4:]))
	ok := subtle.ConstantTimeCompare(a[:4], []byte{0xA6, 0x59, 0x59, 0xA6}) == 1 &&
		mli > 8*(n-1) && mli <= 8*n
	if ok {
		for _, c := range out[mli:] {
			ok = ok && c == 0
		}
	}
	if !ok {
		clear(out)
		return nil, errUnwrap
	}
	return out[:mli], nil
}
