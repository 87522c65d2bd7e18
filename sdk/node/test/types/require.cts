// Type-checked by exports.test.mjs: the CommonJS forms of the docs.
import Mags = require("mags-sdk");

const a: InstanceType<typeof Mags> = new Mags({ apiToken: "t" });
const b = new Mags.Mags({ apiToken: "t" });
export const forms = [a.runAndWait, b.runAndWait, Mags.MagsError];
