// Check the page in headless Chromium (tests/test_web_example.py runs it):
//
//   node headless.mjs URL EXAMPLE SCREENSHOT.png [webgpu]
//
// With "webgpu", Chromium gets a software WebGPU adapter (SwiftShader), so the page's WebGPU path runs
// without a GPU; without it, WebGPU is off and the page runs on WASM. Opens URL, clicks the example image button EXAMPLE (e.g. "star"), waits for the result,
// saves a screenshot and prints the page's window.reciprocam as JSON.
import puppeteer from "puppeteer-core";

const [url, example, screenshot, backend = "wasm"] = process.argv.slice(2);
const gpu = backend === "webgpu"
  ? ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-webgpu-adapter=swiftshader"]
  : ["--disable-gpu"];
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  protocolTimeout: 300000, // a page busy computing answers late
  args: ["--no-sandbox", ...gpu, "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  await page.setViewport({ width: 900, height: 640 });
  await page.goto(`${url}${url.includes("?") ? "&" : "?"}backend=${backend}`);
  const settled = (states) => `["${states.join('","')}"].includes(window.reciprocam?.state)`;
  await page.waitForFunction(settled(["ready", "error"]), { timeout: 270000 });
  await page.click(`#example-${example}`);
  await page.waitForFunction(settled(["done", "error"]), { timeout: 270000 });
  await page.screenshot({ path: screenshot });
  const result = await page.evaluate(() => window.reciprocam);
  console.log(JSON.stringify({ ...result, pageErrors: errors }));
} finally {
  await browser.close();
}
