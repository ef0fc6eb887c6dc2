#include "client/svg_chart.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/substring_count.h"

namespace mixq::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(NiceTicksTest, Table) {
  struct Case {
    double lo, hi;
    int count;
    bool integer_only;
    std::vector<double> ticks;
  };
  const std::vector<Case> cases = {
      {0, 8, 7, false, {0, 2, 4, 6, 8}},
      {0, 10, 6, false, {0, 2, 4, 6, 8, 10}},
      {86.7, 90.0, 6, false, {86, 87, 88, 89, 90}},
      {86.7, 90.0, 8, false, {86.5, 87, 87.5, 88, 88.5, 89, 89.5, 90}},
      {0, 427.3, 7, false, {0, 100, 200, 300, 400, 500}},
      {0, 3, 7, true, {0, 1, 2, 3}},
      {0, 0, 7, true, {-1, 0, 1}},
      {5, 5, 6, false, {4.4, 4.6, 4.8, 5, 5.2, 5.4, 5.6}},
      {0.001, 0.0042, 5, false, {0.001, 0.002, 0.003, 0.004, 0.005}},
      {kNaN, 1, 5, false, {0, 1}},
  };
  for (const Case& c : cases) {
    const std::vector<double> ticks =
        NiceTicks(c.lo, c.hi, c.count, c.integer_only);
    ASSERT_EQ(ticks.size(), c.ticks.size()) << c.lo << ".." << c.hi;
    for (size_t i = 0; i < ticks.size(); ++i) {
      EXPECT_NEAR(ticks[i], c.ticks[i], 1e-9) << c.lo << ".." << c.hi;
    }
  }
}

XyChart TwoSeries() {
  XyChart chart;
  chart.id = "c1";
  chart.title = "Accuracy <per> step";
  chart.x = {"step", true, std::nullopt, std::nullopt};
  chart.y = {"acc & more", false, std::nullopt, std::nullopt};
  chart.series = {
      {"line",
       "#123456",
       ChartSeries::Style::kLine,
       {{0, 1, ""}, {1, 2, ""}, {2, 3, ""}}},
      {"both",
       "#abcdef",
       ChartSeries::Style::kLineAndPoints,
       {{0, 2, "first <one>"}, {1, kNaN, ""}, {2, 1, ""}, {3, 2, ""}}},
  };
  return chart;
}

TEST(RenderXyChartTest, DrawsSeriesAxesAndLegendEscaped) {
  const std::string svg = RenderXyChart(TwoSeries());
  EXPECT_THAT(svg,
              testing::StartsWith("<svg xmlns=\"http://www.w3.org/2000/svg\" "
                                  "id=\"c1\" class=\"chart\""));
  EXPECT_THAT(svg, testing::EndsWith("</svg>"));
  // One polyline for "line"; the NaN breaks "both" into a lone point (no
  // line) and a run of two; three circles (the NaN point is left out).
  EXPECT_EQ(CountSubstrings(svg, "<polyline class=\"mark line\""), 2);
  EXPECT_EQ(CountSubstrings(svg, "<circle class=\"mark point\""), 3);
  EXPECT_THAT(svg, HasSubstr("Accuracy &lt;per&gt; step"));
  EXPECT_THAT(svg, HasSubstr(">acc &amp; more</text>"));
  EXPECT_THAT(svg, HasSubstr("<title>first &lt;one&gt;</title>"));
  EXPECT_THAT(svg, Not(HasSubstr("<per>")));
  EXPECT_THAT(svg, HasSubstr(">line<title>line</title></text>"));
  EXPECT_THAT(svg, HasSubstr(">both<title>both</title></text>"));
  EXPECT_THAT(svg, Not(HasSubstr("no data")));
}

TEST(RenderXyChartTest, ChartWithoutFinitePointsSaysNoData) {
  XyChart chart = TwoSeries();
  for (ChartSeries& series : chart.series) {
    for (ChartPoint& p : series.points) p.y = kNaN;
  }
  EXPECT_FALSE(HasData(chart));
  const std::string svg = RenderXyChart(chart);
  EXPECT_THAT(svg, HasSubstr(">no data</text>"));
  EXPECT_EQ(CountSubstrings(svg, "class=\"mark"), 0);
  EXPECT_TRUE(HasData(TwoSeries()));
}

TEST(RenderXyChartTest, PointsMapIntoThePlotArea) {
  XyChart chart;
  chart.id = "p";
  chart.width = 400;
  chart.height = 200;
  chart.x = {"x", false, 0.0, 10.0};
  chart.y = {"y", false, 0.0, 10.0};
  chart.series = {
      {"s", "red", ChartSeries::Style::kPoints, {{0, 0, ""}, {10, 10, ""}}}};
  const std::string svg = RenderXyChart(chart);
  // Left margin 72, legend 190 → x in [72, 210]; y in [36, 152].
  EXPECT_THAT(svg, HasSubstr("cx=\"72.0\" cy=\"152.0\""));
  EXPECT_THAT(svg, HasSubstr("cx=\"210.0\" cy=\"36.0\""));
}

TEST(RenderBarChartTest, OneBarPerRowLabelsShortenedAndEscaped) {
  BarChart chart;
  chart.id = "bits";
  chart.title = "bits";
  chart.value_label = "weight bits";
  chart.integer_ticks = true;
  chart.max = 8;
  const std::string long_name =
      "model.encoder.layers.11.attention.output.dense.weight";
  chart.bars = {{"<script>x</script>", 4, "#ff7f0e", "4 bits"},
                {long_name, 8, "#1f77b4", ""},
                {"half", 2, "#d62728", ""}};
  const std::string svg = RenderBarChart(chart);
  EXPECT_EQ(CountSubstrings(svg, "<rect class=\"mark bar\""), 3);
  EXPECT_THAT(svg, Not(HasSubstr("<script>")));
  EXPECT_THAT(svg, HasSubstr("&lt;script&gt;x&lt;/script&gt;"));
  EXPECT_THAT(svg, HasSubstr("<title>&lt;script&gt;x&lt;/script&gt;: 4 bits"
                             "</title>"));
  // The label keeps the name's end; the tooltip has all of it.
  EXPECT_THAT(svg, HasSubstr(">…rs.11.attention.output.dense.weight<title>"));
  EXPECT_THAT(svg, HasSubstr("<title>" + long_name + "</title>"));
  // Bars scale with the value: 8 bits is twice 4 bits, four times 2.
  const auto width_of = [&](const std::string& color) {
    const size_t fill = svg.find("fill=\"" + color + "\"");
    const size_t width = svg.rfind("width=\"", fill);
    return std::stod(svg.substr(width + 7));
  };
  EXPECT_NEAR(width_of("#1f77b4"), 2 * width_of("#ff7f0e"), 0.2);
  EXPECT_NEAR(width_of("#1f77b4"), 4 * width_of("#d62728"), 0.2);
}

TEST(RenderBarChartTest, NoBarsSaysNoData) {
  BarChart chart;
  chart.id = "empty";
  const std::string svg = RenderBarChart(chart);
  EXPECT_THAT(svg, HasSubstr(">no data</text>"));
  EXPECT_EQ(CountSubstrings(svg, "class=\"mark"), 0);
}

}  // namespace
}  // namespace mixq::client
