package cdc

import (
	"fmt"

	"github.com/outbox-relay/outbox-relay/schema"
)

// relations caches the Relation messages of a stream. PostgreSQL sends a
// relation's description before its first row on each connection and again
// after its definition changes (ALTER TABLE), so the cache always holds the
// shape of the next row.
type relations struct {
	table   schema.Table
	columns schema.Columns
	byID    map[uint32]*relationInfo
}

type relationInfo struct {
	name string
	// relayed reports the outbox table; rows of other tables in the
	// publication are read past.
	relayed bool
	bind    binding
}

// put records r, binding its columns when it is the outbox table.
func (rs *relations) put(r relation) error {
	if rs.byID == nil {
		rs.byID = make(map[uint32]*relationInfo)
	}
	info := &relationInfo{name: r.Namespace + "." + r.Name}
	if r.Namespace == rs.table.Schema && r.Name == rs.table.Name {
		b, err := bind(rs.columns, info.name, r.Columns)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrColumns, err)
		}
		info.relayed, info.bind = true, b
	}
	rs.byID[r.ID] = info
	return nil
}

// get returns the relation a row belongs to, nil for a table that is not
// relayed, or an error when the stream never described it.
func (rs *relations) get(id uint32) (*relationInfo, error) {
	info, ok := rs.byID[id]
	if !ok {
		return nil, fmt.Errorf("decode insert: relation %d was not described before its row", id)
	}
	if !info.relayed {
		return nil, nil
	}
	return info, nil
}
