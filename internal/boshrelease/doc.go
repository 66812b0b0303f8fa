// Package boshrelease holds the tests of netman's BOSH release: the job templates
// (rendered with render.rb, a stand-in for the bosh-template gem), the packaging scripts
// (run the way a BOSH compilation VM runs them) and the bosh-lite manifests and ops files.
//
// The package has no code of its own; everything is in its tests.
package boshrelease
