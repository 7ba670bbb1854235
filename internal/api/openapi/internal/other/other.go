// Package other holds test fixtures for package openapi: a type whose
// name clashes with one in the openapi tests.
package other

// Item shares its name with openapi's test type Item.
type Item struct {
	SKU string `json:"sku"`
}

// Wrapper refers to Item from its own package.
type Wrapper struct {
	Item Item `json:"item"`
}
