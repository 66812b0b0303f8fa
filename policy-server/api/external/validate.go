package external

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"netman/lib/models"
)

// MaxIDLength is the longest policy group id (and group type) accepted, in bytes.
const MaxIDLength = 255

// checkID refuses ids an agent could never ask for: the id filter splits on commas and
// trims spaces, so an id with either could be stored but never selected.
func checkID(field string, id *string) error {
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

func checkProtocol(field, p string) error {
	if p != models.ProtocolTCP && p != models.ProtocolUDP {
		if p == "" {
			return fmt.Errorf("%s is missing; it must be \"tcp\" or \"udp\"", field)
		}
		return fmt.Errorf("%s %q is not allowed; it must be \"tcp\" or \"udp\"", field, p)
	}
	return nil
}

func checkPort(field string, p *int) error {
	if p == nil {
		return fmt.Errorf("%s is missing", field)
	}
	if *p < 1 || *p > 65535 {
		return fmt.Errorf("%s %d is outside 1-65535", field, *p)
	}
	return nil
}

func checkPorts(field string, start, end *int) error {
	if err := checkPort(field+".start", start); err != nil {
		return err
	}
	if err := checkPort(field+".end", end); err != nil {
		return err
	}
	if *start > *end {
		return fmt.Errorf("%s.start %d is greater than %s.end %d", field, *start, field, *end)
	}
	return nil
}

// checkNoTag refuses tags in a request: the server assigns them.
func checkNoTag(field string, tag *string) error {
	if tag != nil {
		return fmt.Errorf("%s must not be sent: tags are assigned by the policy server", field)
	}
	return nil
}

// firstError returns the first non-nil error.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
