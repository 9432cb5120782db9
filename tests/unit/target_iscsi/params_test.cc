// Operational key negotiation semantics (RFC 7143 §13).
#include "target/iscsi/params.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace tandem::target::iscsi {
namespace {

using testing::value_of;

std::string answer(Negotiator& n, const std::string& k, const std::string& v) {
  TextPairs out;
  EXPECT_TRUE(n.handle({k, v}, out).ok());
  return out.empty() ? "<none>" : value_of(out, k);
}

std::string answer_once(const std::string& k, const std::string& v, TargetOffer offer = {},
                        SessionType type = SessionType::kNormal) {
  Negotiator n(offer, type);
  return answer(n, k, v);
}

TEST(Params, Digests) {
  EXPECT_EQ(answer_once("HeaderDigest", "CRC32C,None"), "CRC32C");
  EXPECT_EQ(answer_once("HeaderDigest", "None,CRC32C"), "None");
  EXPECT_EQ(answer_once("DataDigest", "CRC32C"), "CRC32C");
  TargetOffer no_crc;
  no_crc.allow_data_digest = false;
  EXPECT_EQ(answer_once("DataDigest", "CRC32C,None", no_crc), "None");
  EXPECT_EQ(answer_once("DataDigest", "CRC32C", no_crc), "Reject");
  EXPECT_EQ(answer_once("HeaderDigest", "MD5"), "Reject");
  Negotiator n({}, SessionType::kNormal);
  answer(n, "HeaderDigest", "CRC32C,None");
  answer(n, "DataDigest", "None");
  EXPECT_TRUE(n.result().header_digest);
  EXPECT_FALSE(n.result().data_digest);
}

TEST(Params, BooleanOrAnd) {
  TargetOffer o;  // InitialR2T=No, ImmediateData=Yes
  EXPECT_EQ(answer_once("InitialR2T", "Yes", o), "Yes");
  EXPECT_EQ(answer_once("InitialR2T", "No", o), "No");
  o.initial_r2t = true;
  EXPECT_EQ(answer_once("InitialR2T", "No", o), "Yes");
  EXPECT_EQ(answer_once("ImmediateData", "Yes"), "Yes");
  EXPECT_EQ(answer_once("ImmediateData", "No"), "No");
  TargetOffer noimm;
  noimm.immediate_data = false;
  EXPECT_EQ(answer_once("ImmediateData", "Yes", noimm), "No");
  EXPECT_EQ(answer_once("DataPDUInOrder", "No"), "Yes");
  EXPECT_EQ(answer_once("DataSequenceInOrder", "No"), "Yes");
  EXPECT_EQ(answer_once("IFMarker", "Yes"), "No");
  EXPECT_EQ(answer_once("OFMarker", "No"), "No");
  EXPECT_EQ(answer_once("OFMarkInt", "2048~8192"), "Irrelevant");
  EXPECT_EQ(answer_once("InitialR2T", "Maybe"), "Reject");
}

TEST(Params, Numbers) {
  EXPECT_EQ(answer_once("MaxBurstLength", "16776192"), "1048576");
  EXPECT_EQ(answer_once("MaxBurstLength", "65536"), "65536");
  EXPECT_EQ(answer_once("FirstBurstLength", "16776192"), "262144");
  EXPECT_EQ(answer_once("MaxConnections", "8"), "1");
  EXPECT_EQ(answer_once("DefaultTime2Wait", "0"), "2");    // max
  EXPECT_EQ(answer_once("DefaultTime2Retain", "0"), "0");  // min
  EXPECT_EQ(answer_once("MaxOutstandingR2T", "1"), "1");
  EXPECT_EQ(answer_once("ErrorRecoveryLevel", "2"), "0");
  EXPECT_EQ(answer_once("MaxBurstLength", "0x10000"), "65536");
  EXPECT_EQ(answer_once("MaxBurstLength", "100"), "Reject");
  EXPECT_EQ(answer_once("MaxBurstLength", "abc"), "Reject");
  EXPECT_EQ(answer_once("DefaultTime2Wait", "3601"), "Reject");
  EXPECT_EQ(answer_once("ErrorRecoveryLevel", "3"), "Reject");
}

TEST(Params, MaxRecvDataSegmentLengthIsDeclarative) {
  Negotiator n({}, SessionType::kNormal);
  EXPECT_EQ(answer(n, "MaxRecvDataSegmentLength", "65536"), "<none>");
  TextPairs decl;
  n.declare(decl);
  n.declare(decl);  // once only
  ASSERT_EQ(decl.size(), 1u);
  EXPECT_EQ(decl[0].value, "262144");
  EXPECT_EQ(n.result().initiator_max_recv_data_segment_length, 65536u);
  EXPECT_EQ(n.result().target_max_recv_data_segment_length, 262144u);
}

TEST(Params, FirstBurstClippedToMaxBurst) {
  Negotiator n({}, SessionType::kNormal);
  answer(n, "MaxBurstLength", "65536");
  answer(n, "FirstBurstLength", "262144");
  EXPECT_EQ(n.result().first_burst_length, 65536u);
}

TEST(Params, DefaultsWhenNotNegotiated) {
  Negotiator n({}, SessionType::kNormal);
  SessionParams p = n.result();
  EXPECT_TRUE(p.initial_r2t);  // RFC default, since the initiator did not send it
  EXPECT_TRUE(p.immediate_data);
  EXPECT_EQ(p.max_burst_length, 262144u);
  EXPECT_EQ(p.first_burst_length, 65536u);
}

TEST(Params, UnknownAndTargetOnlyKeys) {
  EXPECT_EQ(answer_once("X-com.example.Foo", "1"), "NotUnderstood");
  EXPECT_EQ(answer_once("Frobnicate", "1"), "NotUnderstood");
  EXPECT_EQ(answer_once("TargetAlias", "x"), "Reject");
  EXPECT_EQ(answer_once("SendTargets", "All"), "Irrelevant");
}

TEST(Params, DiscoveryIrrelevant) {
  for (const char* k :
       {"InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T",
        "DataPDUInOrder", "DataSequenceInOrder", "MaxConnections"}) {
    EXPECT_EQ(answer_once(k, "1", {}, SessionType::kDiscovery), "Irrelevant") << k;
  }
  EXPECT_EQ(answer_once("HeaderDigest", "None", {}, SessionType::kDiscovery), "None");
}

TEST(Params, RenegotiationFails) {
  Negotiator n({}, SessionType::kNormal);
  TextPairs out;
  ASSERT_TRUE(n.handle({"MaxBurstLength", "65536"}, out).ok());
  EXPECT_FALSE(n.handle({"MaxBurstLength", "65536"}, out).ok());
}

}  // namespace
}  // namespace tandem::target::iscsi
