// Package transforms will compile and run the expression steps (filter, set, drop, rename, route, key)
// that a pipeline applies between its stages. Until it lands, connector files that declare transform
// steps are rejected by `sluice validate` with the position of the first step.
package transforms
