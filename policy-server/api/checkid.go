package api

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxIDLength is the longest policy group id (and group type) accepted, in bytes.
const MaxIDLength = 255

// CheckID refuses ids an agent could never ask for: the id filter splits on commas and
// trims spaces, so an id with either could be stored but never selected.
func CheckID(field string, id *string) error {
	if id == nil {
		return fmt.Errorf("%s is missing", field)
	}
	s := *id
	switch {
	case s == "":
		return fmt.Errorf("%s must not be empty", field)
	case len(s) > MaxIDLength:
		return fmt.Errorf("%s is %d bytes long; at most %d are allowed", field, len(s), MaxIDLength)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", field)
	}
	for _, r := range s {
		switch {
		case r == ',':
			return fmt.Errorf("%s %q must not contain a comma", field, s)
		case unicode.IsSpace(r):
			return fmt.Errorf("%s %q must not contain whitespace", field, s)
		case unicode.IsControl(r):
			return fmt.Errorf("%s %q must not contain control characters", field, s)
		}
	}
	return nil
}
