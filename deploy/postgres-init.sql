-- analytics keeps its rollups in a database of its own (each service migrates its own schema).
CREATE DATABASE wamesh_analytics;
