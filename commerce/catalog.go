package commerce

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
	"github.com/commercekit/commercekit/inventory"
)

func checkProductID(id string) error {
	if err := inventory.CheckSKU(id); err != nil {
		return invalid("ProductID", err.Error())
	}
	return nil
}

func checkPrice(price int64) error {
	if price < 1 || price > MaxPrice {
		return invalid("Price", fmt.Sprintf("must be 1..%d", int64(MaxPrice)))
	}
	return nil
}

// CreateProduct adds a product to the catalog with its initial stock (and buyer limit) in
// the inventory. It is idempotent on the product ID: creating a product that exists with
// the same name and price returns it as it is now, without touching its stock; with another
// name or price it fails with *ConflictError (change the price with UpdatePrice, the stock
// with SetStock).
//
// With the SQL inventory the row and the stock commit together; with Redis the stock is set
// first, so a crash in between leaves stock without a product, which a retry completes.
func (s *Service) CreateProduct(ctx context.Context, p NewProduct) (Product, error) {
	if err := checkProductID(p.ID); err != nil {
		return Product{}, err
	}
	if p.Name == "" || len(p.Name) > MaxNameLen || !utf8.ValidString(p.Name) || strings.ContainsFunc(p.Name, unicode.IsControl) {
		return Product{}, invalid("Name", "must be 1-200 bytes of UTF-8 without control characters")
	}
	if err := checkPrice(p.Price); err != nil {
		return Product{}, err
	}
	if p.Stock < 0 || p.Stock > inventory.MaxOnHand {
		return Product{}, invalid("Stock", "must be between 0 and 10^12")
	}
	if p.BuyerLimit < 0 || p.BuyerLimit > inventory.MaxOnHand {
		return Product{}, invalid("BuyerLimit", "must be between 0 (no limit) and 10^12")
	}
	if existing, err := s.productRow(ctx, s.db, p.ID); err == nil {
		return s.sameProduct(ctx, existing, p)
	} else if !errors.Is(err, ErrProductNotFound) {
		return Product{}, err
	}
	now := micros(s.now())
	row := &productRow{ID: p.ID, Name: p.Name, Price: p.Price, CreatedAt: now, UpdatedAt: now}
	setting := inventory.StockSetting{SKU: p.ID, OnHand: p.Stock, BuyerLimit: p.BuyerLimit}
	if err := s.stock.early(ctx, setStockOp(setting)); err != nil {
		return Product{}, err
	}
	err := sqlutil.InTx(ctx, s.db, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
			return err
		}
		return s.stock.within(ctx, tx, setStockOp(setting))
	})
	if sqlutil.IsDuplicateKey(err) { // a concurrent create won
		existing, rerr := s.productRow(ctx, s.db, p.ID)
		if rerr != nil {
			return Product{}, rerr
		}
		return s.sameProduct(ctx, existing, p)
	}
	if err != nil {
		return Product{}, fmt.Errorf("commerce: create product %s: %w", p.ID, err)
	}
	return s.withStock(ctx, row)
}

func (s *Service) sameProduct(ctx context.Context, existing *productRow, p NewProduct) (Product, error) {
	if existing.Name != p.Name || existing.Price != p.Price {
		return Product{}, NewConflictError("product", p.ID)
	}
	return s.withStock(ctx, existing)
}

// UpdatePrice sets a product's price. Orders placed before keep the price they were placed
// at.
func (s *Service) UpdatePrice(ctx context.Context, productID string, price int64) (Product, error) {
	if err := checkProductID(productID); err != nil {
		return Product{}, err
	}
	if err := checkPrice(price); err != nil {
		return Product{}, err
	}
	res, err := s.db.NewUpdate().Model((*productRow)(nil)).Set("price = ?", price).
		Set("updated_at = ?", micros(s.now())).Where("id = ?", productID).Exec(ctx)
	if err != nil {
		return Product{}, fmt.Errorf("commerce: update price of %s: %w", productID, sqlutil.Unavailable(s.db, err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.productRow(ctx, s.db, productID); err != nil {
			return Product{}, err
		}
	}
	return s.GetProduct(ctx, productID)
}

// SetStock sets a product's on-hand count and buyer limit in the inventory and returns the
// stock after it. Units reserved stay reserved: an on-hand count below them fails with
// ErrOutOfStock. The count is absolute: the same setting sent again changes nothing only
// while nothing sold in between; one sent again after a sale (a retry after a lost answer)
// puts the sold units back. A restock or a correction that may be retried is AdjustStock.
func (s *Service) SetStock(ctx context.Context, productID string, onHand, buyerLimit int64) (inventory.Stock, error) {
	return s.changeStock(ctx, productID, "set", func(ctx context.Context) (inventory.Stock, error) {
		return s.inv.SetStock(ctx, inventory.StockSetting{SKU: productID, OnHand: onHand, BuyerLimit: buyerLimit})
	})
}

// StockAdjustment changes a product's on-hand (and available) count by Delta, once per ID
// (see AdjustStock).
type StockAdjustment struct {
	// ID identifies the adjustment: the same ID is applied once, whenever it is sent again.
	ID string
	// Delta is the change: positive for a restock, negative for a loss or a correction.
	Delta int64
	// Reason says why (1 to 255 bytes), kept with the adjustment.
	Reason string
}

// AdjustStock changes a product's stock by adj.Delta once per adj.ID and returns the stock
// after it: a restock or a correction that may be retried. Sent again (the same ID and
// content), it changes nothing and returns the stock as it is; the same ID with another
// delta or reason fails with an *inventory.ConflictError (errcode.ErrKeyReused). A removal
// beyond the available units fails with ErrOutOfStock; an invalid adjustment with
// *ValidationError; an unknown product with ErrProductNotFound. A refused adjustment
// changes nothing. The inventory keeps the adjustment's ID with its journal, so a retry is
// recognised however late it comes.
func (s *Service) AdjustStock(ctx context.Context, productID string, adj StockAdjustment) (inventory.Stock, error) {
	return s.changeStock(ctx, productID, "adjust", func(ctx context.Context) (inventory.Stock, error) {
		return s.inv.Adjust(ctx, inventory.Adjustment{ID: adj.ID, SKU: productID, Delta: adj.Delta, Reason: adj.Reason})
	})
}

// changeStock runs change, the inventory's change (op: "set", "adjust") of the stock of
// productID, once the product is known to the catalog, and returns the stock after it.
func (s *Service) changeStock(ctx context.Context, productID, op string, change func(context.Context) (inventory.Stock, error)) (inventory.Stock, error) {
	if err := s.CheckProduct(ctx, productID); err != nil {
		return inventory.Stock{}, err
	}
	st, err := change(ctx)
	if err != nil {
		return inventory.Stock{}, leafError(fmt.Errorf("commerce: %s stock of %s: %w", op, productID, err))
	}
	return st, nil
}

// CheckProduct returns nil when the catalog holds productID, and ErrProductNotFound when
// it does not: one read of the catalog, without the stock that GetProduct also reads.
func (s *Service) CheckProduct(ctx context.Context, productID string) error {
	if err := checkProductID(productID); err != nil {
		return err
	}
	_, err := s.productRow(ctx, s.db, productID)
	return err
}

// GetProduct returns a product with its stock.
func (s *Service) GetProduct(ctx context.Context, productID string) (Product, error) {
	if err := checkProductID(productID); err != nil {
		return Product{}, err
	}
	row, err := s.productRow(ctx, s.db, productID)
	if err != nil {
		return Product{}, err
	}
	return s.withStock(ctx, row)
}

// ListProducts returns a page of the catalog in product ID order, each product with its
// stock (read in one round trip to the inventory).
func (s *Service) ListProducts(ctx context.Context, q ProductQuery) (ProductPage, error) {
	limit, err := pageLimit(q.Limit)
	if err != nil {
		return ProductPage{}, err
	}
	var rows []productRow
	sel := s.db.NewSelect().Model(&rows).Order("id").Limit(int64(limit + 1))
	if q.Cursor != "" {
		if checkProductID(q.Cursor) != nil { // a cursor is the last product ID of a page
			return ProductPage{}, invalid("Cursor", "is not a cursor of this list")
		}
		sel = sel.Where("id > ?", q.Cursor)
	}
	if err := sel.Scan(ctx); err != nil {
		return ProductPage{}, fmt.Errorf("commerce: list products: %w", sqlutil.Unavailable(s.db, err))
	}
	var page ProductPage
	if len(rows) > limit {
		rows = rows[:limit]
		page.Next = rows[limit-1].ID
	}
	ids := make([]string, len(rows))
	for i := range rows {
		ids[i] = rows[i].ID
	}
	stocks, err := s.Stocks(ctx, ids)
	if err != nil {
		return ProductPage{}, err
	}
	page.Products = make([]Product, len(rows))
	for i := range rows {
		page.Products[i] = rows[i].product()
		page.Products[i].Stock = stocks[rows[i].ID]
	}
	return page, nil
}

// Stocks reads the stock of up to inventory.MaxStocksPerCall products in one round trip to
// the inventory, without touching the catalog: the fast path of a stock display. Unknown
// products are absent from the map.
func (s *Service) Stocks(ctx context.Context, productIDs []string) (map[string]inventory.Stock, error) {
	if len(productIDs) == 0 {
		return map[string]inventory.Stock{}, nil
	}
	for _, id := range productIDs {
		if err := checkProductID(id); err != nil {
			return nil, err
		}
	}
	st, err := s.inv.Stocks(ctx, productIDs)
	if err != nil {
		return nil, leafError(fmt.Errorf("commerce: read stock: %w", err))
	}
	return st, nil
}

func (s *Service) productRow(ctx context.Context, db bun.IDB, id string) (*productRow, error) {
	row := new(productRow)
	if err := db.NewSelect().Model(row).Where("id = ?", id).Scan(ctx); err != nil {
		if sqlutil.IsNoRows(err) {
			return nil, fmt.Errorf("%w: %s", ErrProductNotFound, id)
		}
		return nil, fmt.Errorf("commerce: read product %s: %w", id, sqlutil.Unavailable(db, err))
	}
	return row, nil
}

func (s *Service) withStock(ctx context.Context, row *productRow) (Product, error) {
	p := row.product()
	st, err := s.inv.Stock(ctx, row.ID)
	if err != nil && !errors.Is(err, inventory.ErrUnknownSKU) {
		return Product{}, fmt.Errorf("commerce: read stock of %s: %w", row.ID, err)
	}
	p.Stock = st
	return p, nil
}

func pageLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultPageSize, nil
	case n < 0 || n > MaxPageSize:
		return 0, invalid("Limit", fmt.Sprintf("must be 0..%d", MaxPageSize))
	}
	return n, nil
}
