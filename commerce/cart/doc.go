// Package cart keeps each user's shopping cart in SQL (bun: MySQL/MariaDB or SQLite) and
// turns it into an order through commerce.
//
// A cart is a list of lines, one per product: Add adds units to a line, SetQty sets a
// line's quantity, Remove drops it, and Get lists the lines with the product's current
// name, price and availability read from commerce's catalog and inventory. A cart holds
// the order limits at every step (at most commerce.MaxLines lines and commerce.MaxQty
// units of one product), so no cart breaks the limits of one order; a request that would
// break them, or names an unknown product, fails with a typed error and changes nothing.
// Whether a cart can be ordered now is commerce's decision at checkout: the stock, the
// buyer limits and the unpaid caps (commerce.WithUnpaidLimits: 20 units of one product by
// default, where a cart holds up to MaxQty) refuse with their own typed errors.
//
// A cart never reserves stock: the units are reserved only when the order is placed, and
// the availability Get shows is what the inventory says at that moment.
//
// Checkout places an order of the cart's lines through commerce.Service.PlaceOrder and
// deletes the cart's lines IN THE ORDER'S TRANSACTION (commerce.PlaceOrderRequest.InTx):
// either the order is placed and the cart is empty, or neither happened. It is idempotent
// on (user, idempotency key): a retry, even one that finds the cart already emptied by the
// first attempt, returns the same order; concurrent checkouts with one key place one
// order and empty the cart once. A cart that changed between being read and being
// ordered (its lines edited, or ordered by another checkout) fails with ErrChanged, and
// nothing is placed — also when commerce refused the order of the lines read (their
// stock, the unpaid limits, the points) before it could see the change.
//
// The checkout's key is recorded (commerce_cart_checkouts) in the order's transaction with
// the key of the order it placed, which is derived from the checkout's key, everything
// ordered and the cart's version (commerce_carts.version, bumped by every change of its
// lines): a retry after ErrChanged — even once the cart is changed back to what the first
// attempt read — or with other points, is a new order for commerce and never meets the
// first attempt's stock reservation. The record is kept as long as the
// order, so a retry is answered rightly however late it comes. The order key is no secret
// (the user knows everything it derives from): an order already under it that no checkout
// with the key recorded — one the user placed directly with that key — is not taken for
// the cart's order; the checkout fails with *commerce.ConflictError, the cart unchanged.
// A checkout paying with points alone pays only the order it placed (PlaceOrder, given
// InTx, pays no order it finds under the key), so such an order is left unpaid.
//
// Add is not idempotent (it adds units); callers that retry it should put it behind an
// idempotency key, as refserver does. SetQty and Remove are idempotent.
package cart
