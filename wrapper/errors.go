package wrapper

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"netman/lib/datastore"
)

// Error codes of the wrapper, in the range the CNI spec leaves to plugins (100 and up).
// Besides these, the wrapper returns the spec's well-known codes:
//
//	1  (ErrIncompatibleCNIVersion) the config's cniVersion is not one the wrapper speaks
//	4  (ErrInvalidEnvironmentVariables) CNI_COMMAND, CNI_CONTAINERID, ... missing
//	6  (ErrDecodingFailure) the network config is not JSON
//	1  (ErrIncompatibleCNIVersion) also: the delegate's result cannot be converted to
//	   the runtime's version (the ADD is undone)
//	7  (ErrInvalidNetworkConfig) missing datastore or delegate, a bad mtu, overhead,
//	   underlay_ip, force poll address or datastore file owner, metadata over 64 KiB,
//	   CHECK without prevResult
//	50 (ErrPluginNotAvailable) STATUS: the datastore cannot be used
//
// and a delegate's own code (with its message kept and prefixed by the delegate and
// command) when the delegate fails with a CNI error.
const (
	// ErrDelegate: the delegate could not be run or failed without a CNI error code.
	ErrDelegate uint = 100
	// ErrDatastore: the datastore could not be read or written, or one of its paths is a
	// symbolic link or another non-regular file (never followed).
	ErrDatastore uint = 101
	// ErrDatastoreCorrupt: the datastore holds something other than a record map.
	// It is left untouched for an operator to inspect.
	ErrDatastoreCorrupt uint = 102
	// ErrMTU: the underlay MTU could not be detected or leaves less than 576 bytes.
	ErrMTU uint = 103
	// ErrNoRecord: CHECK found no record for the container, or one with another IP.
	ErrNoRecord uint = 104
	// ErrNoIP: the delegate's ADD result holds no IP address to record.
	ErrNoIP uint = 105
)

func datastoreError(doing string, err error) *types.Error {
	if errors.Is(err, datastore.ErrCorrupt) {
		return types.NewError(ErrDatastoreCorrupt, doing+": datastore is corrupt", err.Error())
	}
	return types.NewError(ErrDatastore, doing, err.Error())
}

// delegateError keeps the delegate's code and message, naming the delegate and command.
func delegateError(typ, command string, err error) *types.Error {
	var e *types.Error
	if errors.As(err, &e) {
		code := e.Code
		if code == 0 {
			code = ErrDelegate
		}
		return types.NewError(code, fmt.Sprintf("delegate %s %s: %s", typ, command, e.Msg), e.Details)
	}
	return types.NewError(ErrDelegate, fmt.Sprintf("delegate %s %s failed", typ, command), err.Error())
}
