package coupon

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/commercekit/commercekit/internal/sqlutil"
)

// termsColumns are the name and terms columns a template and its coupons share (a coupon
// keeps a copy of its template's terms).
type termsColumns struct {
	Name           string `bun:"name,notnull,type:varchar(200)"`
	Kind           string `bun:"kind,notnull,type:varchar(16)"`
	Amount         int64  `bun:"amount,notnull"`
	Percent        int64  `bun:"percent,notnull"`
	MaxDiscount    int64  `bun:"max_discount,notnull"`
	MinOrderAmount int64  `bun:"min_order_amount,notnull"`
}

func (c termsColumns) terms() Terms {
	return Terms{Kind: Kind(c.Kind), Amount: c.Amount, Percent: c.Percent, MaxDiscount: c.MaxDiscount, MinOrderAmount: c.MinOrderAmount}
}

func toTermsColumns(name string, t Terms) termsColumns {
	return termsColumns{Name: name, Kind: string(t.Kind), Amount: t.Amount, Percent: t.Percent, MaxDiscount: t.MaxDiscount, MinOrderAmount: t.MinOrderAmount}
}

// templateRow is a row of coupon_templates.
type templateRow struct {
	bun.BaseModel `bun:"table:coupon_templates"`

	ID string `bun:"id,pk,type:varchar(64)"`
	termsColumns
	IssueStart    time.Time `bun:"issue_start,nullzero,type:datetime(6)"`
	IssueEnd      time.Time `bun:"issue_end,nullzero,type:datetime(6)"`
	UsableFrom    time.Time `bun:"usable_from,nullzero,type:datetime(6)"`
	UseBy         time.Time `bun:"use_by,nullzero,type:datetime(6)"`
	ValidDays     int       `bun:"valid_days,notnull"`
	TotalQuantity int64     `bun:"total_quantity,notnull"`
	PerUserLimit  int       `bun:"per_user_limit,notnull"`
	CreatedAt     time.Time `bun:"created_at,notnull,type:datetime(6)"`
	// Issuer is the name of the issuer that issues the template's coupons (Issuer.Name);
	// NULL for a template created by an earlier version until an Issue claims it.
	Issuer string `bun:"issuer,nullzero,type:varchar(64)"`
}

// couponRow is a row of coupon_coupons. seq orders a wallet; the unique key on (template,
// user, ordinal) is what keeps a user within the per-user limit whatever the issuer, the
// unique key on (template, place) with places 1..TotalQuantity is what keeps a template
// within its total whatever the issuer (NULL, for templates without a total, never
// collides), and the unique request ID is what makes Issue idempotent on the durable
// record.
type couponRow struct {
	bun.BaseModel `bun:"table:coupon_coupons"`

	Seq        int64  `bun:"seq,pk,autoincrement"`
	ID         string `bun:"id,notnull,type:varchar(64),unique:coupon_coupons_id_uq"`
	TemplateID string `bun:"template_id,notnull,type:varchar(64),unique:coupon_coupons_holder_uq"`
	UserID     string `bun:"user_id,notnull,type:varchar(64),unique:coupon_coupons_holder_uq"`
	Ordinal    int    `bun:"ordinal,notnull,unique:coupon_coupons_holder_uq"`
	Place      int64  `bun:"place,nullzero"`
	RequestID  string `bun:"request_id,notnull,type:varchar(64),unique:coupon_coupons_request_uq"`
	termsColumns
	State      string    `bun:"state,notnull,type:varchar(16)"`
	OrderID    string    `bun:"order_id,nullzero,type:varchar(64)"`
	IssuedAt   time.Time `bun:"issued_at,notnull,type:datetime(6)"`
	UsableFrom time.Time `bun:"usable_from,nullzero,type:datetime(6)"`
	ExpiresAt  time.Time `bun:"expires_at,nullzero,type:datetime(6)"`
	UsedAt     time.Time `bun:"used_at,nullzero,type:datetime(6)"`
}

// redemptionRow is a row of coupon_redemptions: one order's use of one coupon.
type redemptionRow struct {
	bun.BaseModel `bun:"table:coupon_redemptions"`

	OrderID      string    `bun:"order_id,pk,type:varchar(64)"`
	CouponID     string    `bun:"coupon_id,pk,type:varchar(64)"`
	UserID       string    `bun:"user_id,notnull,type:varchar(64)"`
	TemplateID   string    `bun:"template_id,notnull,type:varchar(64)"`
	OrderAmount  int64     `bun:"order_amount,notnull"`
	Discount     int64     `bun:"discount,notnull"`
	State        string    `bun:"state,notnull,type:varchar(16)"`
	HoldDeadline time.Time `bun:"hold_deadline,nullzero,type:datetime(6)"`
	ReservedAt   time.Time `bun:"reserved_at,notnull,type:datetime(6)"`
	ResolvedAt   time.Time `bun:"resolved_at,nullzero,type:datetime(6)"`
}

// CreateSchema creates the package's tables and indexes (coupon_templates, coupon_coupons,
// coupon_redemptions) when they do not exist, and on MySQL/MariaDB gives every ID column a
// binary collation, altering existing tables that lack it. Tables of an earlier version
// get the templates' issuer column (see Service.ClaimIssuance), the coupons' place column
// and its unique index, and the coupons of limited
// templates that have no place yet get one after the template's last (see Coupon.Place):
// run it once every process of an earlier version has stopped. It is idempotent, safe
// when several processes run it at once (replicas starting together), and works on
// MySQL/MariaDB and SQLite. Issuer backends may have tables of their own
// (sqlcoupon.CreateSchema).
func CreateSchema(ctx context.Context, db bun.IDB) error {
	for _, model := range []any{(*templateRow)(nil), (*couponRow)(nil), (*redemptionRow)(nil)} {
		if _, err := db.NewCreateTable().Model(model).IfNotExists().Exec(ctx); err != nil {
			return fmt.Errorf("coupon: creating tables: %w", err)
		}
	}
	if err := sqlutil.AddColumn(ctx, db, "coupon_coupons", "place", "BIGINT NULL"); err != nil {
		return fmt.Errorf("coupon: %w", err) // a table of an earlier version
	}
	if err := sqlutil.AddColumn(ctx, db, "coupon_templates", "issuer", "VARCHAR(64) NULL"); err != nil {
		return fmt.Errorf("coupon: %w", err) // a table of an earlier version
	}
	indexes := []struct {
		model   any
		name    string
		unique  bool
		columns []string
	}{
		{(*couponRow)(nil), "coupon_coupons_wallet_idx", false, []string{"user_id", "seq"}},
		{(*couponRow)(nil), "coupon_coupons_place_uq", true, []string{"template_id", "place"}},
		{(*redemptionRow)(nil), "coupon_redemptions_sweep_idx", false, []string{"state", "hold_deadline"}},
	}
	for _, ix := range indexes {
		q := db.NewCreateIndex().Model(ix.model).Index(ix.name).Column(ix.columns...).IfNotExists()
		if ix.unique {
			q = q.Unique()
		}
		if _, err := q.Exec(ctx); err != nil && !sqlutil.IsDuplicateIndex(err) {
			return fmt.Errorf("coupon: creating index %s: %w", ix.name, err)
		}
	}
	for table, columns := range idColumns {
		if err := sqlutil.BinaryColumns(ctx, db, table, columns...); err != nil {
			return fmt.Errorf("coupon: %w", err)
		}
	}
	if err := placeUnplaced(ctx, db); err != nil {
		return fmt.Errorf("coupon: giving places to earlier coupons: %w", err)
	}
	return nil
}

// placeUnplaced gives the coupons of limited templates that have no place (written by an
// earlier version) the places after their template's last, in the order they were issued,
// one template at a time (placeTemplate). The templates are found through the (template,
// place) index, from the limited templates.
func placeUnplaced(ctx context.Context, db bun.IDB) error {
	var templates []string
	err := db.NewSelect().TableExpr("coupon_coupons AS c").ColumnExpr("DISTINCT c.template_id").
		Join("JOIN coupon_templates AS t ON t.id = c.template_id AND t.total_quantity > 0").
		Where("c.place IS NULL").OrderExpr("c.template_id").Scan(ctx, &templates)
	if err != nil {
		return err
	}
	for _, id := range templates {
		if err := placeTemplate(ctx, db, id); err != nil {
			return fmt.Errorf("template %s: %w", id, err)
		}
	}
	return nil
}

// placeTemplate gives the coupons of a limited template that have no place the places
// after its last, in the order they were issued, in one transaction holding the template's
// row lock, its reads locking reads (the latest rows, not a snapshot): processes running
// CreateSchema at once (replicas starting together, one restarted after a crash beside
// another) place each coupon once and skip no place, whichever comes first. Without the
// lock, one that read the coupons to place before another placed them, and the last place
// after, would number them on from there, leaving places unused: the issuer's count, which
// hands them out in turn, would then meet a taken place, and the template's last coupons
// could never be issued.
func placeTemplate(ctx context.Context, db bun.IDB, templateID string) error {
	return sqlutil.InTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		var locked []string
		err := sqlutil.ForUpdate(tx.NewSelect().Model((*templateRow)(nil)).Column("id").Where("id = ?", templateID)).Scan(ctx, &locked)
		if err != nil {
			return err
		}
		var seqs []int64
		err = sqlutil.ForUpdate(tx.NewSelect().Model((*couponRow)(nil)).Column("seq").
			Where("template_id = ?", templateID).Where("place IS NULL").Order("seq")).Scan(ctx, &seqs)
		if err != nil || len(seqs) == 0 {
			return err
		}
		var last int64
		err = sqlutil.ForUpdate(tx.NewSelect().Model((*couponRow)(nil)).ColumnExpr("COALESCE(MAX(place), 0)").
			Where("template_id = ?", templateID)).Scan(ctx, &last)
		if err != nil {
			return err
		}
		for i, seq := range seqs {
			_, err := tx.NewUpdate().Model((*couponRow)(nil)).Set("place = ?", last+int64(i)+1).
				Where("seq = ?", seq).Where("place IS NULL").Exec(ctx)
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// idColumns are the identifier columns of each table: on MySQL they compare byte for byte
// (utf8mb4_bin, whatever the database's default collation), so that "order-x" never
// restores "ORDER-X"'s coupon, nor "alice" counts against "Alice"'s limit.
var idColumns = map[string][]string{
	"coupon_templates":   {"id"},
	"coupon_coupons":     {"id", "template_id", "user_id", "request_id", "order_id"},
	"coupon_redemptions": {"order_id", "coupon_id", "user_id", "template_id"},
}

func (r *templateRow) template() Template {
	return Template{
		ID: r.ID, Name: r.Name,
		Terms:      r.terms(),
		IssueStart: utc(r.IssueStart), IssueEnd: utc(r.IssueEnd), UsableFrom: utc(r.UsableFrom), UseBy: utc(r.UseBy),
		ValidDays: r.ValidDays, TotalQuantity: r.TotalQuantity, PerUserLimit: r.PerUserLimit, CreatedAt: utc(r.CreatedAt),
	}
}

func toTemplateRow(t Template) *templateRow {
	return &templateRow{
		ID: t.ID, termsColumns: toTermsColumns(t.Name, t.Terms),
		IssueStart: t.IssueStart, IssueEnd: t.IssueEnd, UsableFrom: t.UsableFrom, UseBy: t.UseBy,
		ValidDays: t.ValidDays, TotalQuantity: t.TotalQuantity, PerUserLimit: t.PerUserLimit, CreatedAt: t.CreatedAt,
	}
}

func (r *couponRow) coupon() Coupon {
	return Coupon{
		ID: r.ID, TemplateID: r.TemplateID, Name: r.Name, UserID: r.UserID, Ordinal: r.Ordinal, Place: r.Place, RequestID: r.RequestID,
		Terms: r.terms(),
		State: State(r.State), OrderID: r.OrderID,
		IssuedAt: utc(r.IssuedAt), UsableFrom: utc(r.UsableFrom), ExpiresAt: utc(r.ExpiresAt), UsedAt: utc(r.UsedAt),
	}
}

func toCouponRow(c Coupon) *couponRow {
	return &couponRow{
		ID: c.ID, TemplateID: c.TemplateID, UserID: c.UserID, Ordinal: c.Ordinal, Place: c.Place, RequestID: c.RequestID,
		termsColumns: toTermsColumns(c.Name, c.Terms),
		State:        string(c.State), OrderID: c.OrderID,
		IssuedAt: c.IssuedAt, UsableFrom: c.UsableFrom, ExpiresAt: c.ExpiresAt, UsedAt: c.UsedAt,
	}
}

func (r *redemptionRow) redemption() Redemption {
	return Redemption{
		OrderID: r.OrderID, CouponID: r.CouponID, UserID: r.UserID, TemplateID: r.TemplateID,
		OrderAmount: r.OrderAmount, Discount: r.Discount, State: RedemptionState(r.State),
		HoldDeadline: utc(r.HoldDeadline), ReservedAt: utc(r.ReservedAt), ResolvedAt: utc(r.ResolvedAt),
	}
}

func toRedemptionRow(r Redemption) *redemptionRow {
	return &redemptionRow{
		OrderID: r.OrderID, CouponID: r.CouponID, UserID: r.UserID, TemplateID: r.TemplateID,
		OrderAmount: r.OrderAmount, Discount: r.Discount, State: string(r.State),
		HoldDeadline: r.HoldDeadline, ReservedAt: r.ReservedAt, ResolvedAt: r.ResolvedAt,
	}
}
