package httpapi

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// checkUnicode refuses JSON text that encoding/json would change silently: it turns
// bytes that are not UTF-8 and \u escapes of unpaired surrogates into U+FFFD, so two
// different ids sent by a client would be stored as one. The check runs on the raw
// bytes, before decoding.
func checkUnicode(data []byte) error {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		return fmt.Errorf("request body is not valid UTF-8 (byte %d): JSON text must be UTF-8", off)
	}
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 >= len(data) || data[i+1] != 'u' {
				i++ // skip the escaped character (it may be a quote)
				continue
			}
			r, ok := hex4(data[i+2:])
			if !ok {
				continue // not an escape at all: the decoder says so
			}
			if utf16.IsSurrogate(r) {
				paired := false
				if r < 0xDC00 && i+11 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
					low, ok := hex4(data[i+8:])
					paired = ok && low >= 0xDC00 && low <= 0xDFFF
				}
				if !paired {
					return fmt.Errorf(`request body holds \u%04X without its surrogate pair (byte %d): JSON strings must be valid Unicode`, r, i)
				}
				i += 6 // the low half, checked above
			}
			i += 5
		}
	}
	return nil
}

// hex4 reads the four hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
