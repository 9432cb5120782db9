// Cluster state mirror: the controller's nodes, volumes, copies and volume access rows as
// one JSON snapshot, and its application to a joined node's local catalogue, so every node's
// data plane and iSCSI target read what the controller decided from their own file. The
// revision is the catalogue's highest event seq (every change writes an event). Pure
// functions over a Tx (run inside the caller's transaction); thread-safe as the Tx is.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "db/catalogue.h"

namespace tandem::mgmt {

// Bounds on an applied snapshot, so a hostile or broken one cannot exhaust memory.
inline constexpr size_t kMaxSnapshotNodes = 1000;
inline constexpr size_t kMaxSnapshotVolumes = 100000;
inline constexpr size_t kMaxSnapshotCopies = 600000;

db::DbResult<int64_t> cluster_revision(db::Tx& tx);

// {"revision", "nodes":[{id,name,address,api_url,state,iscsi_port,repl_port,capacity_bytes,
// free_bytes}], "volumes":[{id,name,size_bytes,block_size,class_name,labels,generation,
// master_node,state,created_ms,updated_ms}], "copies":[{id,volume_id,node_id,role,state,
// applied_seq,number,sync_done_bytes,sync_total_bytes,behind_bytes,updated_ms}],
// "access":[{volume_id,initiators,chap_user,chap_secret,mutual_user,mutual_secret}]}.
// Holds CHAP secrets: send it only over the node-token-authenticated API.
db::DbResult<nlohmann::json> cluster_snapshot(db::Tx& tx);

// Replaces the local nodes, volumes, copies and volume_access rows with the snapshot's
// (upsert, then delete what it lacks); events, settings and reservations of kept volumes
// stay. The whole snapshot is checked first: a malformed one is a kCorrupt error and
// nothing is applied. The revision is stored in the "cluster_revision" setting.
db::DbResult<void> apply_cluster_snapshot(db::Tx& tx, const nlohmann::json& snap);

// The revision last applied on this node (-1 when none).
db::DbResult<int64_t> applied_revision(db::Tx& tx);

}  // namespace tandem::mgmt
