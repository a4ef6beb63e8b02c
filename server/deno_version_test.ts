import { equal as assertEquals, match } from "node:assert/strict";
import { denoVersionProblem, PINNED_DENO } from "./deno_version.ts";

Deno.test("deno version check refuses the node:http2 crash releases and old Denos", () => {
  for (const v of ["2.9.4", "2.9.5", "2.9.6"]) {
    const why = denoVersionProblem(v);
    match(why ?? "", /node:http2/);
    match(why ?? "", /2\.9\.3/);
  }
  for (const v of ["2.6.9", "2.0.0", "1.46.3"]) match(denoVersionProblem(v) ?? "", /too old/);
  for (const v of [PINNED_DENO, "2.8.3", "2.7.0", "2.9.7", "3.0.0"]) {
    assertEquals(denoVersionProblem(v), undefined);
  }
});
