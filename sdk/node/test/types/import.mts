// Type-checked by exports.test.mjs: the ES module forms.
import Mags, { Mags as Named } from "mags-sdk";

export const forms = [new Mags({ apiToken: "t" }).runAndWait, new Named({}).runAndWait];
