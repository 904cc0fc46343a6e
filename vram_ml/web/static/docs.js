// /docs: Swagger UI over /openapi.json, from files served by this server (no CDN).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (typeof SwaggerUIBundle === "undefined") {
    document.getElementById("no-bundle").hidden = false;
    return;
  }
  SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
});
