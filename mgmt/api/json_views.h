// JSON shapes of the API's resources, shared by the routes (and mirrored by openapi.json).
// Pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "db/catalogue.h"
#include "mgmt/volume_service.h"

namespace tandem::mgmt {

std::string iso_time(int64_t ms);
nlohmann::json volume_json(const VolumeView& v, const std::vector<db::NodeRow>& nodes);
nlohmann::json access_json(const db::AccessRow& a);
nlohmann::json node_json(const db::NodeRow& n, size_t copies);
nlohmann::json class_json(const db::ClassRow& c);
nlohmann::json event_json(const db::EventRow& e);
nlohmann::json cluster_json(const std::string& this_node, const std::vector<db::NodeRow>& nodes,
                            const std::vector<VolumeView>& volumes);

}  // namespace tandem::mgmt
