package internalapi

import (
	"net/http"

	"netman/lib/apiwire"
	"netman/lib/httpapi"
)

// InternalLastUpdatedV0Path is Cloud Foundry's v0 spelling of policies_last_updated,
// which its agents may call.
const InternalLastUpdatedV0Path = apiwire.InternalLastUpdatedV0Path

// withV0LastUpdated adds the v0 policies_last_updated route, served by the same
// handler as the v1 route, so both always give the same version.
func withV0LastUpdated(routes []httpapi.Route) []httpapi.Route {
	for _, rt := range routes {
		if rt.Path == apiwire.InternalLastUpdatedV1Path && rt.Method == http.MethodGet {
			v0 := rt
			v0.Name, v0.Path = "internal_v0_policies_last_updated", InternalLastUpdatedV0Path
			return append(routes, v0)
		}
	}
	return routes
}
