// What DBeaver does with a Trino connection, through the same driver
// (io.trino:trino-jdbc): connect to a catalog, list its schemas and their
// tables through DatabaseMetaData (DBeaver's navigator), list a table's
// columns, and read the table (its data editor).
//
//   java -cp trino-jdbc.jar TrinoBrowse.java JDBC_URL USER SCHEMA.TABLE
//
// prints, one item per line, tab-separated:
//   driver  <name> <version>
//   catalog <name>
//   schema  <name>
//   table   <schema> <table>
//   column  <name> <type>
//   row     <value>…         (NULL for SQL NULL)
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class TrinoBrowse {
    public static void main(String[] args) throws Exception {
        if (args.length != 3 || !args[2].contains(".")) {
            System.err.println("usage: TrinoBrowse JDBC_URL USER SCHEMA.TABLE");
            System.exit(2);
        }
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        String schemaName = args[2].substring(0, args[2].indexOf('.'));
        String tableName = args[2].substring(args[2].indexOf('.') + 1);
        try (Connection connection = DriverManager.getConnection(args[0], properties)) {
            DatabaseMetaData metadata = connection.getMetaData();
            print("driver", metadata.getDriverName(), metadata.getDriverVersion());
            String catalog = connection.getCatalog();
            print("catalog", catalog);
            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = metadata.getSchemas(catalog, null)) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                    print("schema", rs.getString("TABLE_SCHEM"));
                }
            }
            for (String schema : schemas) {
                if (schema.equals("information_schema")) {
                    continue;
                }
                try (ResultSet rs = metadata.getTables(catalog, schema, "%", new String[] {"TABLE"})) {
                    while (rs.next()) {
                        print("table", rs.getString("TABLE_SCHEM"), rs.getString("TABLE_NAME"));
                    }
                }
            }
            try (ResultSet rs = metadata.getColumns(catalog, schemaName, tableName, "%")) {
                while (rs.next()) {
                    print("column", rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
                }
            }
            try (Statement statement = connection.createStatement();
                 ResultSet rs = statement.executeQuery("SELECT * FROM \"" + schemaName + "\".\"" + tableName + "\"")) {
                ResultSetMetaData columns = rs.getMetaData();
                while (rs.next()) {
                    String[] values = new String[columns.getColumnCount() + 1];
                    values[0] = "row";
                    for (int i = 1; i <= columns.getColumnCount(); i++) {
                        String value = rs.getString(i);
                        values[i] = value == null ? "NULL" : value;
                    }
                    print(values);
                }
            }
        }
    }

    private static void print(String... fields) {
        System.out.println(String.join("\t", fields));
    }
}
