package externalapi

import (
	"fmt"

	"netman/lib/models"
)

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
